"""The portal in a real browser (Debian's chromium), on the real stack: the four services
on Kafka, PostgreSQL and seeded moto, and the local OIDC provider to sign in at.

The acceptance scenario: alice signs in, asks for AdministratorAccess on payments-prod
(the example policy: a ticket, one SRE lead's approval), waits on the request's page; bob
approves through the API; her page turns `active` by itself; she ends the access; the
page turns `revoked` and the assignment is gone from Identity Center. Around it: signing
in and out, the account search with and without JavaScript, a form error, CSRF, the
session's idle expiry and the Content-Security-Policy. Each page a user reads is
screenshotted (test-output/screenshots/) and checked with axe-core.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from elevate_local.kafka import KafkaBroker
from elevate_local.oidc import subject_of
from elevate_local.postgres import PostgresCluster
from elevate_local.simulate_activity import session_records, sign_in_record
from playwright.async_api import Browser, Error, Locator, Page, Response, expect

from tests.helpers import eventually
from tests.integration.browser.conftest import VIEWPORT, Shot
from tests.integration.browser.support import (
    axe_check,
    csp_problems,
    idp_login_page,
    inline_scripts,
    sign_in,
)
from tests.stack import Stack, audit_until, audit_until_revoke, start_stack

REQUESTER, APPROVER = "alice", "bob"
# The example policy: one SRE lead approves, a ticket is required (^[A-Z]+-[0-9]+$).
ACCOUNT, PERMISSION_SET = "payments-prod", "AdministratorAccess"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# A grant becomes active (or ends) once grant-worker has changed Identity Center.
GRANT_TIMEOUT_MS = 90_000

pytestmark = pytest.mark.integration


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def _new_request_for(page: Page, stack: Stack, account: str, shot: Shot | None = None) -> str:
    """From the nav, search `account` and open its request form; the account's id. With
    `shot`, the results page is screenshotted and checked with axe on the way."""
    await page.locator("a#nav-new").click()
    await expect(page).to_have_url(f"{stack.api}/request")
    await page.locator("input#account-search").press_sequentially(account)
    link = page.locator("ul#account-results a.account", has_text=account)
    await expect(link).to_have_count(1)
    account_id = stack.seeded.account_ids[account]
    await expect(link).to_have_attribute("data-account-id", account_id)
    if shot is not None:
        await shot(page, "0-new-request-results")
        await axe_check(page)
    await link.click()
    await expect(page).to_have_url(f"{stack.api}/request?account={account_id}")
    await expect(page.locator("form#request-form")).to_be_visible()
    return account_id


async def _fill_request(page: Page, *, justification: str | None, ticket: str) -> None:
    form = page.locator("form#request-form")
    await form.locator(f"input[name=permission_set][value={PERMISSION_SET}]").check()
    await form.locator("input#duration").fill("60")
    await form.locator("input[name=start_mode][value=now]").check()
    if justification is not None:
        await form.locator("textarea#justification").fill(justification)
    await form.locator("input#ticket").fill(ticket)


async def _asks(
    stack: Stack,
    ticket: str | None,
    justification: str,
    *,
    account: str = ACCOUNT,
    minutes: int = 30,
    break_glass: bool = False,
) -> str:
    """alice asks for PERMISSION_SET on `account` through the API; the request's id."""
    body: dict[str, object] = {
        "account_id": stack.seeded.account_ids[account],
        "permission_set": PERMISSION_SET,
        "duration_minutes": minutes,
        "justification": justification,
        "break_glass": break_glass,
    }
    if ticket:
        body["ticket"] = ticket
    async with stack.client(REQUESTER) as alice:
        made = await alice.post("/v1/requests", json=body)
    assert made.status_code == 202, made.text
    return str(made.json()["id"])


async def _csrf_of(page: Page) -> str:
    token = await page.locator("form#sign-out input[name=csrf]").get_attribute("value")
    assert token, "the sign-out form carries no csrf value"
    return token


# ---- signing in and out ----


async def test_signed_out_home_offers_sign_in(portal_stack: Stack, page: Page, shot: Shot) -> None:
    response = await page.goto(f"{portal_stack.api}/")
    assert response is not None
    assert response.status == 200, await response.text()
    await expect(page.locator("h1")).to_be_visible()
    sign_in_link = page.locator("a#sign-in")
    await expect(sign_in_link).to_have_attribute("href", "/login")
    await shot(page, "home-signed-out")
    await axe_check(page)

    await sign_in_link.click()
    await idp_login_page(page, portal_stack.issuer)


async def test_sign_in_lands_on_my_requests_with_the_navigation(
    portal_stack: Stack, page: Page
) -> None:
    base = portal_stack.api
    login = await page.request.get(f"{base}/login", max_redirects=0)
    assert login.status == 303, login.status
    assert login.headers["location"].startswith(f"{portal_stack.issuer}/"), login.headers

    callbacks: list[Response] = []
    page.on("response", lambda r: callbacks.append(r) if "/callback?" in r.url else None)
    await sign_in(page, base, REQUESTER)
    assert [(c.status, _path(c.headers.get("location", ""))) for c in callbacks] == [
        (303, "/requests")
    ], [(c.url, c.status, c.headers) for c in callbacks]

    await expect(page.locator("h1")).to_be_visible()
    await expect(page.locator("a#nav-new")).to_have_attribute("href", "/request")
    await expect(page.locator("a#nav-mine")).to_have_attribute("href", "/requests")
    sign_out = page.locator("form#sign-out")
    await expect(sign_out).to_have_attribute("method", re.compile("^post$", re.IGNORECASE))
    await expect(sign_out).to_have_attribute("action", "/logout")
    await expect(sign_out.locator("input[type=hidden][name=csrf]")).to_have_count(1)
    assert await _csrf_of(page)

    home = await page.request.get(f"{base}/", max_redirects=0)
    assert (home.status, _path(home.headers.get("location", ""))) == (303, "/requests")

    # The same navigation on every signed-in page.
    for path in ("/request", "/requests"):
        await page.goto(f"{base}{path}")
        await expect(page.locator("h1")).to_be_visible()
        for selector in ("a#nav-new", "a#nav-mine", "form#sign-out"):
            await expect(page.locator(selector)).to_have_count(1)

    # Signing out ends the session: my requests need a new sign-in.
    async with page.expect_response(lambda r: _path(r.url) == "/logout"):
        await sign_out.locator("button, input[type=submit]").first.click()
    await page.goto(f"{base}/requests")
    await idp_login_page(page, portal_stack.issuer)


# ---- the account search and the request form ----


async def test_account_search_updates_the_results_in_place(
    portal_stack: Stack, page: Page, shot: Shot
) -> None:
    base = portal_stack.api
    await sign_in(page, base, REQUESTER)
    await page.locator("a#nav-new").click()
    await expect(page).to_have_url(f"{base}/request")
    search_form = page.locator("form#account-search-form")
    await expect(search_form).to_have_attribute("method", re.compile("^get$", re.IGNORECASE))
    search = search_form.locator("input#account-search")
    await expect(search).to_have_attribute("name", "q")
    await expect(search).to_have_accessible_name(re.compile(r"\S"))  # it has a label

    await page.evaluate("window.__marker = 1")
    await search.press_sequentially(ACCOUNT)
    results = page.locator("ul#account-results a.account")
    await expect(results.filter(has_text=ACCOUNT)).to_have_count(1)
    await expect(results.filter(has_not_text=ACCOUNT)).to_have_count(0)  # only what matches
    assert await page.evaluate("window.__marker") == 1, "typing in the search navigated"
    for account_id in await results.evaluate_all("els => els.map(e => e.dataset.accountId)"):
        assert re.fullmatch(r"\d{12}", account_id or ""), account_id
    await shot(page, "new-request-results")
    await axe_check(page)

    await results.filter(has_text=ACCOUNT).click()
    account_id = portal_stack.seeded.account_ids[ACCOUNT]
    await expect(page).to_have_url(f"{base}/request?account={account_id}")
    form = page.locator("form#request-form")
    await expect(form).to_have_attribute("method", re.compile("^post$", re.IGNORECASE))
    await expect(form).to_have_attribute("action", "/request")
    await expect(form.locator(f"input[name=permission_set][value={PERMISSION_SET}]")).to_have_count(
        1
    )
    await expect(form.locator("input#duration")).to_have_attribute("name", "duration_minutes")
    for mode in ("now", "later"):
        await expect(form.locator(f"input[name=start_mode][value={mode}]")).to_have_count(1)
    await expect(form.locator("input#start")).to_have_attribute("type", "datetime-local")
    await expect(form.locator("input#start")).to_have_attribute("name", "start")
    for selector in ("textarea#justification", "input#ticket", "button#submit"):
        await expect(form.locator(selector)).to_be_visible()
    await expect(form.locator("input[type=hidden][name=csrf]")).to_have_count(1)
    await shot(page, "request-form")
    await axe_check(page)


async def test_account_search_works_without_javascript(
    portal_stack: Stack, browser: Browser, shot: Shot
) -> None:
    context = await browser.new_context(viewport=VIEWPORT, java_script_enabled=False)
    try:
        page = await context.new_page()
        base = portal_stack.api
        await sign_in(page, base, REQUESTER)
        await page.goto(f"{base}/request")
        await page.locator("input#account-search").fill(ACCOUNT)
        await page.locator("input#account-search").press("Enter")  # submits the GET form
        await expect(page).to_have_url(re.compile(r"/request\?(.*&)?q=" + re.escape(ACCOUNT)))
        link = page.locator("ul#account-results a.account", has_text=ACCOUNT)
        await expect(link).to_have_attribute(
            "data-account-id", portal_stack.seeded.account_ids[ACCOUNT]
        )
        await shot(page, "new-request-results-no-js")
    finally:
        await context.close()


async def test_a_missing_justification_is_shown_next_to_the_field(
    portal_stack: Stack, page: Page, shot: Shot
) -> None:
    await sign_in(page, portal_stack.api, REQUESTER)
    await _new_request_for(page, portal_stack, ACCOUNT)
    await _fill_request(page, justification=None, ticket="INC-1234")
    # The server's answer is under test, not the browser's own check of `required`.
    await page.locator("form#request-form").evaluate("f => { f.noValidate = true; }")
    async with page.expect_response(
        lambda r: r.request.method == "POST" and _path(r.url) == "/request"
    ) as answer:
        await page.locator("button#submit").click()
    refused = await answer.value
    assert refused.status == 422, (refused.status, await refused.text())
    policy = refused.headers.get("content-security-policy")
    assert not csp_problems(policy), csp_problems(policy)

    error = page.locator("#justification-error")
    await expect(error).to_be_visible()
    await expect(error).to_have_text(re.compile(r"\S"))
    field = page.locator("textarea#justification")
    await expect(field).to_have_attribute(
        "aria-describedby", re.compile(r"(^|\s)justification-error(\s|$)")
    )
    await expect(field).to_have_accessible_description(re.compile(r"\S"))
    field_box, error_box = await field.bounding_box(), await error.bounding_box()
    assert field_box is not None
    assert error_box is not None
    gap = max(
        error_box["y"] - (field_box["y"] + field_box["height"]),
        field_box["y"] - (error_box["y"] + error_box["height"]),
    )
    assert gap < 150, f"the error is {gap:.0f}px away from the field: {field_box} {error_box}"
    await shot(page, "request-form-missing-justification")
    await axe_check(page)


async def test_the_pages_fit_a_phone_and_work_from_the_keyboard(
    portal_stack: Stack, browser: Browser, shot: Shot
) -> None:
    """At 375x740 no page scrolls sideways; from the keyboard alone the skip link comes
    first, and an account is searched and opened with Tab and Enter."""
    context = await browser.new_context(viewport={"width": 375, "height": 740})
    try:
        page = await context.new_page()
        base = portal_stack.api
        await sign_in(page, base, REQUESTER)
        account_id = portal_stack.seeded.account_ids[ACCOUNT]
        for name, path in (
            ("my-requests", "/requests"),
            ("picker", "/request"),
            ("form", f"/request?account={account_id}"),
        ):
            await page.goto(f"{base}{path}")
            await expect(page.locator("h1")).to_be_visible()
            wide = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert wide <= 0, f"{path} is {wide}px wider than a phone screen"
            await shot(page, f"phone-{name}")

        await page.goto(f"{base}/request")
        await page.keyboard.press("Tab")
        skip = page.locator("a.skip")
        await expect(skip).to_be_focused()
        await expect(skip).to_be_visible()  # shown when focused
        await page.locator("input#account-search").focus()
        await page.keyboard.type(ACCOUNT)
        link = page.locator("ul#account-results a.account", has_text=ACCOUNT)
        await expect(link).to_have_count(1)
        for _ in range(10):  # Tab onwards to the result
            await page.keyboard.press("Tab")
            if await link.evaluate("el => el === document.activeElement"):
                break
        await expect(link).to_be_focused()
        await page.keyboard.press("Enter")
        await expect(page).to_have_url(f"{base}/request?account={account_id}")
    finally:
        await context.close()


# ---- security ----


async def test_posts_without_the_csrf_token_are_refused(portal_stack: Stack, page: Page) -> None:
    base = portal_stack.api
    # erin: engineers may have ReadOnlyAccess on the sandboxes, granted at once.
    await sign_in(page, base, "erin")
    await page.goto(f"{base}/request?account={portal_stack.seeded.account_ids['sandbox-shared']}")
    form = page.locator("form#request-form")
    await form.locator("input[name=permission_set][value=ReadOnlyAccess]").check()
    await form.locator("input#duration").fill("30")
    await form.locator("input[name=start_mode][value=now]").check()
    await form.locator("textarea#justification").fill("look at the sandbox")
    fields: dict[str, str | float | bool] = await form.evaluate(
        "f => Object.fromEntries([...new FormData(f)].map(([k, v]) => [k, String(v)]))"
    )
    assert fields.get("csrf"), f"the request form carries no csrf value: {fields}"
    without = {k: v for k, v in fields.items() if k != "csrf"}

    for body in (without, {**without, "csrf": "not-the-token"}):
        answer = await page.request.post(f"{base}/request", form=body, max_redirects=0)
        assert answer.status == 403, (body.get("csrf"), answer.status, await answer.text())
    forged: list[dict[str, str | float | bool]] = [{}, {"csrf": "not-the-token"}]
    for body in forged:
        answer = await page.request.post(f"{base}/logout", form=body, max_redirects=0)
        assert answer.status == 403, (body, answer.status, await answer.text())

    # Nothing happened: still signed in, and no request was made.
    await page.goto(f"{base}/requests")
    await expect(page).to_have_url(f"{base}/requests")
    await expect(page.locator("table#my-requests tr[data-request-id]")).to_have_count(0)


async def test_another_users_request_is_neither_shown_nor_changed(
    portal_stack: Stack, page: Page
) -> None:
    """The portal asks the same use cases as /v1: erin cannot see alice's request, nor
    cancel it with her own (valid) form token."""
    stack, base = portal_stack, portal_stack.api
    request_id = await _asks(stack, "INC-77", "INC-77: the portal's visibility")

    await sign_in(page, base, "erin")
    for path in (f"/requests/{request_id}", f"/requests/{request_id}/panel"):
        answer = await page.request.get(f"{base}{path}", max_redirects=0)
        assert answer.status == 404, (path, answer.status, await answer.text())
        assert "alice" not in await answer.text()
    csrf = await _csrf_of(page)
    answer = await page.request.post(
        f"{base}/requests/{request_id}/cancel", form={"csrf": csrf}, max_redirects=0
    )
    assert answer.status == 404, (answer.status, await answer.text())
    async with stack.client(REQUESTER) as alice:
        assert (await alice.get(f"/v1/requests/{request_id}")).json()["status"] == "pending"


async def test_pages_carry_a_strict_content_security_policy(
    portal_stack: Stack, page: Page
) -> None:
    base = portal_stack.api
    blocked: list[str] = []
    page.on(
        "console",
        lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
    )
    account_id = portal_stack.seeded.account_ids[ACCOUNT]

    async def check(path: str) -> None:
        response = await page.goto(f"{base}{path}")
        assert response is not None, path
        assert response.status == 200, (path, response.status, await response.text())
        assert "text/html" in response.headers.get("content-type", ""), response.headers
        policy = response.headers.get("content-security-policy")
        assert not csp_problems(policy), (path, csp_problems(policy))
        inline = inline_scripts(await response.text())
        assert not inline, (path, inline)

    await check("/")  # signed out
    await sign_in(page, base, REQUESTER)
    for path in (
        "/requests",
        "/request",
        f"/request?q={ACCOUNT}",
        f"/request?account={account_id}",
    ):
        await check(path)
    assert not blocked, f"the portal's own pages ran into their policy: {blocked}"

    # And the policy is enforced: an inline script does not run.
    with pytest.raises(Error, match="Content Security Policy"):
        await page.add_script_tag(content="window.__inline = 1")
    assert await page.evaluate("window.__inline") is None


async def test_an_idle_session_expires_and_asks_to_sign_in_again(
    kafka: KafkaBroker,
    postgres: PostgresCluster,
    moto_endpoint: str,
    catalog: str,
    tmp_path: Path,
    page: Page,
) -> None:
    idle = 3
    env = {"request_api": {"ELEVATE_PORTAL_IDLE_TIMEOUT_SECONDS": str(idle)}}
    async with start_stack(kafka, postgres, moto_endpoint, catalog, tmp_path, env=env) as stack:
        base = stack.api
        await sign_in(page, base, REQUESTER)
        last: list[object] = []

        async def expired() -> bool:
            answer = await page.request.get(f"{base}/requests", max_redirects=0)
            location = answer.headers.get("location", "")
            last[:] = [answer.status, location]
            return answer.status == 303 and (
                _path(location).startswith("/login") or location.startswith(stack.issuer)
            )

        # Each probe uses the session, which restarts its idle clock: probes are spaced
        # more than the idle timeout apart, so the first one after it sees it over.
        try:
            await eventually(expired, timeout=60, interval=idle + 1.5, what="session expiry")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer {last}\n{stack.logs()}") from None

        await page.goto(f"{base}/requests")
        await idp_login_page(page, stack.issuer)
        login = page.locator("form", has=page.locator("input[name=sub][type=text]"))
        await login.locator("input[name=sub]").fill(subject_of(REQUESTER))
        await login.get_by_role("button", name="Authorize").click()
        await expect(page).to_have_url(f"{base}/requests")


# ---- the acceptance scenario ----


async def test_alice_requests_bob_approves_the_page_follows_she_ends_it(
    portal_stack: Stack, page: Page, shot: Shot
) -> None:
    stack, base = portal_stack, portal_stack.api
    alice_id = stack.seeded.user_ids[REQUESTER]
    assert alice_id not in stack.assigned(ACCOUNT, PERMISSION_SET), "moto already holds it"
    pages: list[Response] = []

    def on_response(response: Response) -> None:
        if response.url.startswith(base) and response.request.is_navigation_request():
            pages.append(response)

    page.on("response", on_response)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(_path(r.url)) if "/events" in r.url else None)

    await sign_in(page, base, REQUESTER)
    await _new_request_for(page, stack, ACCOUNT, shot)
    await shot(page, "1-request-form")
    await axe_check(page)
    await _fill_request(
        page, justification="INC-1234: restart the stuck payment workers", ticket="INC-1234"
    )
    await page.locator("button#submit").click()
    await expect(page).to_have_url(re.compile(f"^{re.escape(base)}/requests/{UUID}$"))
    detail_url = page.url
    request_id = detail_url.rsplit("/", 1)[1]
    status = page.locator("#status")
    await expect(status).to_have_text("pending")
    await expect(status).to_have_attribute("data-status", "pending")
    await expect(page.locator("form#cancel")).to_be_visible()
    await expect(page.locator("form#end-now")).to_have_count(0)
    await shot(page, "2-detail-pending")
    await axe_check(page)

    async def stream_opened() -> bool:
        return f"/requests/{request_id}/events" in streams

    await eventually(
        stream_opened, timeout=15, what=f"an EventSource on /requests/{request_id}/events"
    )

    # bob decides elsewhere; alice's page follows by itself.
    await page.evaluate("window.__marker = 1")
    async with stack.client(APPROVER) as bob:
        approved = await bob.post(f"/v1/requests/{request_id}/approve", json={})
        assert approved.status_code == 202, approved.text
    await expect(status).to_have_text("active", timeout=GRANT_TIMEOUT_MS)
    await expect(status).to_have_attribute("data-status", "active")
    assert page.url == detail_url
    assert await page.evaluate("window.__marker") == 1, "the page was reloaded, not updated"
    assert stack.assigned(ACCOUNT, PERMISSION_SET).count(alice_id) == 1
    end_now = page.locator("form#end-now")
    await expect(end_now).to_be_visible()
    await expect(end_now).to_have_attribute("action", f"/requests/{request_id}/revoke")
    await expect(page.locator("form#cancel")).to_have_count(0)
    await shot(page, "3-detail-active")
    await axe_check(page)

    # Ending it takes the form's token: a forged POST changes nothing.
    forged = await page.request.post(
        f"{base}/requests/{request_id}/revoke", form={}, max_redirects=0
    )
    assert forged.status == 403, (forged.status, await forged.text())
    async with stack.client(REQUESTER) as alice:
        assert (await alice.get(f"/v1/requests/{request_id}")).json()["status"] == "active"

    await end_now.locator("button").click()
    await expect(page.locator("#status")).to_have_text("revoked", timeout=GRANT_TIMEOUT_MS)
    await expect(page.locator("#status")).to_have_attribute("data-status", "revoked")
    note = page.locator("#sessions-note")
    await expect(note).to_be_visible()
    await expect(note).to_have_text(re.compile(r"\S"))
    await expect(page.locator("form#end-now")).to_have_count(0)
    assert alice_id not in stack.assigned(ACCOUNT, PERMISSION_SET)
    await shot(page, "4-detail-revoked")
    await axe_check(page)

    await page.locator("a#nav-mine").click()
    await expect(page).to_have_url(f"{base}/requests")
    await expect(
        page.locator(f"table#my-requests tr[data-request-id='{request_id}']")
    ).to_have_count(1)
    await shot(page, "5-my-requests")
    await axe_check(page)

    # Every portal page of the scenario carried the strict policy.
    for response in pages:
        if "text/html" in response.headers.get("content-type", ""):
            policy = response.headers.get("content-security-policy")
            assert not csp_problems(policy), (response.url, csp_problems(policy))


# ---- approvals and active access ----


def _shown(at: str) -> str:
    """An API time as the portal shows it (UTC here: the browser's zone is UTC)."""
    return datetime.fromisoformat(at.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")


async def _activity_rows(page: Page, want: int) -> Locator:
    """The request page's activity rows once there are `want` of them (activity arrives
    from CloudTrail through audit-ingest: the page is reloaded until it shows)."""
    rows = page.locator("table#activity tbody tr")

    async def shown() -> bool:
        await page.reload()
        return await rows.count() >= want

    await eventually(shown, timeout=GRANT_TIMEOUT_MS / 1000, interval=1, what="activity")
    return rows


async def test_bob_approves_on_his_page_her_session_shows_and_outlives_it(
    portal_stack: Stack, browser: Browser, page: Page, shot: Shot
) -> None:
    """alice's pending request is on bob's approvals page with its exact ARN and window;
    alice has no approve button and her forged approval is refused; bob approves there and
    her page turns active by itself; CloudTrail (simulated into the stack's trail) shows
    her session's calls on the request's page; bob ends it from his active-access page,
    and a sign-in after the end is highlighted as access that outlived the grant."""
    stack, base = portal_stack, portal_stack.api
    account_id = stack.seeded.account_ids[ACCOUNT]
    request_id = await _asks(stack, "INC-88", "INC-88: the approvals page", minutes=45)
    async with stack.client(REQUESTER) as alice_api:
        asked = (await alice_api.get(f"/v1/requests/{request_id}")).json()

    # alice: no approvals page in her navigation, no decision form on her own request
    await sign_in(page, base, REQUESTER)
    await expect(page.locator("a#nav-approvals")).to_have_count(0)
    await page.goto(f"{base}/requests/{request_id}")
    await expect(page.locator("#status")).to_have_text("pending")
    await expect(page.locator("form.decide")).to_have_count(0)
    forged = await page.request.post(
        f"{base}/requests/{request_id}/decision",
        form={"csrf": await _csrf_of(page), "decision": "approve"},
        max_redirects=0,
    )
    assert forged.status == 403, (forged.status, await forged.text())
    await page.evaluate("window.__marker = 1")

    bobs = await browser.new_context(viewport=VIEWPORT)
    try:
        bob = await bobs.new_page()
        await sign_in(bob, base, APPROVER)
        await bob.locator("a#nav-approvals").click()
        await expect(bob).to_have_url(f"{base}/approvals")
        card = bob.locator(f"#approvals li[data-request-id='{request_id}']")
        await expect(card).to_have_count(1)
        for text in (REQUESTER, account_id, "INC-88", "the approvals page", "one-sre-lead"):
            await expect(card).to_contain_text(text)
        arn = stack.seeded.permission_set_arns[PERMISSION_SET]
        await expect(card.locator("code.arn")).to_have_text(arn)
        for at in (asked["start"], asked["end"]):
            await expect(card).to_contain_text(_shown(at))
        await shot(bob, "approvals")
        await axe_check(bob)
        await card.locator("textarea[name=comment]").fill("ok for the incident window")
        await card.get_by_role("button", name="Approve").click()
        await expect(bob).to_have_url(f"{base}/approvals?sent={request_id}")
        await expect(bob.locator("#decision-sent")).to_contain_text(PERMISSION_SET)
        await expect(card).to_have_count(0)

        # alice's page follows by itself
        await expect(page.locator("#status")).to_have_text("active", timeout=GRANT_TIMEOUT_MS)
        assert await page.evaluate("window.__marker") == 1, "the page was reloaded"

        # her session, as CloudTrail delivers it: a sign-in, then four calls (once
        # audit-ingest knows the grant: else they wait to be flagged as uncovered)
        await audit_until(stack, request_id, activity=1)
        now = datetime.now(UTC) + timedelta(seconds=2)  # past the start in whole seconds
        session = session_records(
            user=REQUESTER, account_id=account_id, permission_set=PERMISSION_SET, start=now
        )
        stack.trail.deliver(session, account_id=account_id)
        rows = await _activity_rows(page, len(session))
        for name in ("GetCallerIdentity", "ListBuckets", "DescribeInstances", "ListRoles"):
            await expect(rows.filter(has_text=name)).to_have_count(1)
        await expect(rows.first).to_contain_text("203.0.113.10")
        await expect(page.locator("table#activity tr.outlived")).to_have_count(0)
        await shot(page, "detail-activity")
        await axe_check(page)

        await bob.locator("a#nav-active").click()
        await expect(bob).to_have_url(f"{base}/active")
        row = bob.locator(f"table#active-access tr[data-request-id='{request_id}']")
        await expect(row).to_contain_text(REQUESTER)
        await expect(row.locator("td.left")).to_have_text(re.compile(r"\d+ min"))
        await shot(bob, "active-access")
        await axe_check(bob)
        await row.get_by_role("button").click()
        await expect(bob).to_have_url(f"{base}/active")
    finally:
        await bobs.close()

    await expect(page.locator("#status")).to_have_text("revoked", timeout=GRANT_TIMEOUT_MS)
    await audit_until_revoke(stack, request_id)  # audit-ingest knows the grant's end
    late = sign_in_record(
        user=REQUESTER,
        account_id=account_id,
        permission_set=PERMISSION_SET,
        # CloudTrail's times are whole seconds: a sign-in in the same second as the end
        # would read as at the end (still covered), so this one is 2 s past it
        at=datetime.now(UTC) + timedelta(seconds=2),
    )
    stack.trail.deliver([late], account_id=account_id)
    await _activity_rows(page, len(session) + 1)
    outlived = page.locator("table#activity tr.outlived")
    await expect(outlived).to_have_count(1)
    await expect(outlived).to_contain_text("after the grant ended")
    await shot(page, "detail-outlived")
    await axe_check(page)
    async with stack.client(REQUESTER) as alice_api:
        timeline = (await alice_api.get(f"/v1/requests/{request_id}")).json()["timeline"]
    assert any(t.get("comment") == "ok for the incident window" for t in timeline), timeline
    assert stack.seeded.user_ids[REQUESTER] not in stack.assigned(ACCOUNT, PERMISSION_SET)


# ---- audit and policy ----


async def test_carol_audits_exports_and_reviews_and_dave_explains_the_policy(
    portal_stack: Stack, browser: Browser, page: Page, shot: Shot
) -> None:
    """An auditor searches every request, exports them as CSV and completes a break-glass
    review; an admin reads the policy and has it explain a case; a requester has neither."""
    stack, base = portal_stack, portal_stack.api
    justification = "INC-99: break-glass for the audit page"
    request_id = await _asks(stack, None, justification, account="sandbox-shared", break_glass=True)

    await sign_in(page, base, REQUESTER)  # alice: no audit, no policy
    await expect(page.locator("a#nav-audit")).to_have_count(0)
    for path in ("/audit", "/policy"):
        refused = await page.request.get(f"{base}{path}", max_redirects=0)
        assert refused.status == 403, (path, refused.status)

    waiting = await _asks(stack, "INC-98", "INC-98: a request an auditor reads")
    carols = await browser.new_context(viewport=VIEWPORT)
    try:
        carol = await carols.new_page()
        await sign_in(carol, base, "carol")
        # an auditor reads a pending request but is offered no decision
        await expect(carol.locator("a#nav-approvals")).to_have_count(0)
        await carol.goto(f"{base}/requests/{waiting}")
        await expect(carol.locator("#status")).to_have_text("pending")
        await expect(carol.locator("form.decide")).to_have_count(0)
        await expect(carol.get_by_role("button", name="Approve")).to_have_count(0)
        await carol.locator("a#nav-audit").click()
        await carol.locator("input#f-requester").fill(REQUESTER)
        await carol.locator("#audit-filters button[type=submit]").click()
        rows = carol.locator("table#audit-requests tbody tr[data-request-id]")
        await expect(rows.first).to_be_visible()
        assert set(await rows.locator("td:nth-child(2)").all_inner_texts()) == {REQUESTER}
        await shot(carol, "audit")
        await axe_check(carol)
        href = await carol.locator("a#export").get_attribute("href")
        assert href is not None
        assert href.startswith("/audit/export?"), href
        csv = await carol.request.get(f"{base}{href}")
        assert csv.status == 200, await csv.text()
        assert csv.headers["content-type"].startswith("text/csv")
        lines = (await csv.text()).splitlines()
        assert request_id in "\n".join(lines[1:]), lines[:3]

        await carol.goto(f"{base}/audit?kind=review")
        form = carol.locator(f"form.review[action='/requests/{request_id}/review']")
        await expect(form).to_have_count(1)
        await form.locator("textarea").fill("checked against INC-99: justified")
        await form.get_by_role("button").click()
        await expect(carol).to_have_url(f"{base}/audit?kind=review")
        await expect(form).to_have_count(0)
    finally:
        await carols.close()
    async with stack.client(REQUESTER) as alice_api:
        assert (await alice_api.get(f"/v1/requests/{request_id}")).json()["review"] == "done"

    daves = await browser.new_context(viewport=VIEWPORT)
    try:
        dave = await daves.new_page()
        await sign_in(dave, base, "dave")
        await dave.locator("a#nav-policy").click()
        await expect(dave).to_have_url(f"{base}/policy")
        await expect(dave.locator("pre#policy-text")).to_contain_text("approval_rules")
        await dave.locator("input#x-user").fill(REQUESTER)
        await dave.locator("input#x-account").fill(ACCOUNT)
        await dave.locator("input#x-ps").fill(PERMISSION_SET)
        await dave.locator("#explain-form button[type=submit]").click()
        await expect(dave.locator("#explanation")).to_contain_text("Eligible")
        await shot(dave, "policy-explained")
        await axe_check(dave)
    finally:
        await daves.close()
