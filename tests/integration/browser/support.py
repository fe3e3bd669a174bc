"""What the portal's browser tests drive and check with: Debian's chromium, axe-core from
the tool cache (both installed by `scripts/bootstrap.sh --with-postgres`), signing in at
the local OIDC provider, screenshots, and the portal's Content-Security-Policy.

A missing browser or axe fails the test with the command that installs it; nothing skips.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from elevate_local.oidc import subject_of
from playwright.async_api import Page, expect

from tests.stack import ROOT

BOOTSTRAP = ROOT / "scripts/bootstrap.sh"
INSTALL_HINT = "run `bash scripts/bootstrap.sh --with-postgres` (as root for apt)"
# Debian's launcher script first (it reads /etc/chromium.d), then the binary it starts.
CHROMIUM_CANDIDATES = (Path("/usr/bin/chromium"), Path("/usr/lib/chromium/chromium"))
TOOLS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "elevate" / "tools"
SCREENSHOTS = ROOT / "test-output" / "screenshots"
# axe impacts that fail a page (minor and moderate are reported by axe, not failed here).
FAILING_IMPACTS = ("serious", "critical")


def chromium_executable() -> Path:
    for candidate in CHROMIUM_CANDIDATES:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise AssertionError(
        f"Debian's chromium is not installed ({', '.join(map(str, CHROMIUM_CANDIDATES))}): "
        f"{INSTALL_HINT}"
    )


def axe_version() -> str:
    """The axe-core version bootstrap.sh pins (one pin, read from the script)."""
    match = re.search(r"^AXE_VERSION=(\S+)$", BOOTSTRAP.read_text(), re.MULTILINE)
    assert match, f"{BOOTSTRAP} pins no AXE_VERSION"
    return match.group(1)


def axe_source() -> str:
    path = TOOLS / f"axe-core-{axe_version()}" / "axe.min.js"
    if not path.is_file():
        raise AssertionError(f"axe-core is not in the tool cache ({path}): {INSTALL_HINT}")
    return path.read_text()


async def axe_check(page: Page) -> None:
    """Run axe-core on the page as the user has it now; fail on any serious or critical
    violation, listed readably.

    axe is injected with `page.evaluate`, which runs over the DevTools protocol and is not
    subject to the page's Content-Security-Policy: the page keeps its policy (its own
    inline scripts, or `add_script_tag(content=...)`, stay blocked), and axe sees the very
    DOM under test — what a script changed, or the answer to a POST (a 422 form) — where a
    second `bypass_csp` context would have to fetch the URL again and audit a fresh copy.
    """
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.evaluate(axe_source())
    results: dict[str, Any] = await page.evaluate(
        "axe.run(document, {resultTypes: ['violations']})"
    )
    failing = [v for v in results["violations"] if v.get("impact") in FAILING_IMPACTS]
    assert not failing, f"axe: {len(failing)} serious/critical on {page.url}\n" + "\n".join(
        _violation(v) for v in failing
    )


def _violation(v: Mapping[str, Any]) -> str:
    lines = [f"- [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})"]
    for node in v["nodes"][:10]:
        lines.append(f"    at {' '.join(map(str, node['target']))}: {node['html'][:160]}")
        if node.get("failureSummary"):
            summary = " ".join(str(node["failureSummary"]).split())
            lines.append(f"      {summary[:300]}")
    if len(v["nodes"]) > 10:
        lines.append(f"    … and {len(v['nodes']) - 10} more")
    return "\n".join(lines)


def screenshot_path(test: str, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", test).strip("_")
    return SCREENSHOTS / safe / f"{name}.png"


async def sign_in(page: Page, base_url: str, user: str) -> None:
    """Sign `user` (a seeded user name) in the way a person does: the portal's /login
    sends the browser to the local IdP's login page, where the `sub` is typed and the
    form submitted; the IdP sends the browser back, and the portal lands on /requests."""
    response = await page.goto(f"{base_url}/login")
    assert not page.url.startswith(f"{base_url}/"), (
        f"{base_url}/login did not send the browser to the IdP: it stayed on {page.url} "
        f"({response.status if response else 'no response'})"
    )
    login = page.locator("form", has=page.locator("input[name=sub][type=text]"))
    await expect(login).to_be_visible()
    await login.locator("input[name=sub]").fill(subject_of(user))
    await login.get_by_role("button", name="Authorize").click()
    await expect(page).to_have_url(f"{base_url}/requests")


async def idp_login_page(page: Page, issuer: str) -> None:
    """The page is the IdP's login form (where an unauthenticated user is sent)."""
    await expect(page).to_have_url(re.compile("^" + re.escape(issuer) + "/"))
    await expect(page.locator("input[name=sub][type=text]")).to_be_visible()


def csp_problems(policy: str | None) -> list[str]:
    """What is wrong with a portal page's Content-Security-Policy header (none: [])."""
    if policy is None:
        return ["no Content-Security-Policy header"]
    problems = [
        f"{bad} in {policy!r}" for bad in ("'unsafe-inline'", "'unsafe-eval'") if bad in policy
    ]
    directives = {
        parts[0].lower(): parts[1:] for parts in (d.split() for d in policy.split(";")) if parts
    }
    script_src = directives.get("script-src")
    if script_src is None:
        problems.append(f"no script-src directive in {policy!r}")
    elif "'self'" not in script_src:
        problems.append(f"script-src is {' '.join(script_src)!r}, not 'self'")
    return problems


_SCRIPT_TYPES = ("", "text/javascript", "application/javascript", "module")


class _InlineScripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name.lower(): (value or "").strip().lower() for name, value in attrs}
        names = set(values)
        # a data block (`type="application/json"`) is never executed, so CSP leaves it be
        runs = values.get("type", "") in _SCRIPT_TYPES
        if tag == "script" and runs and "src" not in names:
            self.found.append(self.get_starttag_text() or "<script>")
        handlers = sorted(n for n in names if n.startswith("on"))
        if handlers:
            self.found.append(f"<{tag}> with inline handler(s) {handlers}")


def inline_scripts(html: str) -> list[str]:
    """`<script>` elements without `src`, and inline event handlers (`onclick=`...): code a
    `script-src 'self'` policy blocks, so it would silently not work."""
    parser = _InlineScripts()
    parser.feed(html)
    return parser.found
