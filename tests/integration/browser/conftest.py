"""Fixtures of the portal's browser tests: one headless Debian chromium for the session
(Playwright's async API: the suite's tests run on pytest-asyncio's session loop), a fresh
1280x800 context per test, the four-services stack the portal runs in, and `shot`.

The stack is shared by the tests of a module (starting one takes several seconds); its
topics are its own, as the `catalog` fixture makes them. A test that needs other settings
starts its own with `tests.stack.start_stack(..., env=...)`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.admin import ensure_topics
from elevate_local.kafka import KafkaBroker
from elevate_local.postgres import PostgresCluster
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    ViewportSize,
    async_playwright,
)
from playwright.async_api import expect as playwright_expect

from tests.integration.browser.support import chromium_executable, screenshot_path
from tests.stack import Stack, start_stack

VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
# Playwright's `expect` retries until this (a bound for a broken run, not a pause).
playwright_expect.set_options(timeout=15_000)

Shot = Callable[[Page, str], Awaitable[Path]]


@pytest.fixture(scope="session")
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as p:
        yield p


@pytest.fixture(scope="session")
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    """Debian's chromium (never a browser build of Playwright's own); `--no-sandbox`
    because the suite runs as root, where chromium refuses its sandbox."""
    browser = await playwright.chromium.launch(
        executable_path=chromium_executable(), headless=True, args=["--no-sandbox"]
    )
    yield browser
    await browser.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport=VIEWPORT)
    yield context
    await context.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Shot:
    """`await shot(page, name)`: a full-page screenshot in
    test-output/screenshots/<test>/<name>.png; returns its path."""

    async def take(page: Page, name: str) -> Path:
        path = screenshot_path(request.node.name, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture(scope="module")
async def portal_stack(
    kafka: KafkaBroker,
    postgres: PostgresCluster,
    moto_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """The four services, request-api serving the portal at `stack.api`."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    kafka.allow(prefix)  # as the `catalog` fixture: this stack's topics and their ACLs
    await ensure_topics(kafka.endpoint(Principal.ADMIN), prefix=prefix)
    tmp = tmp_path_factory.mktemp("portal-stack")
    # An outlived (or uncovered) record is flagged once no grant has turned up to cover
    # it: 15 minutes in production, seconds here.
    env = {"audit_ingest": {"ELEVATE_CORRELATION_WAIT": "PT3S"}}
    async with start_stack(kafka, postgres, moto_endpoint, prefix, tmp, env=env) as stack:
        yield stack
