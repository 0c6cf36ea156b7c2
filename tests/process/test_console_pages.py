"""The console's time-bound access and review pages in a real browser (Chromium through
Playwright) against a real ``jmlsync serve`` and a real OIDC provider (Canaille), on both
store backends: a requester asks, an approver in another browser approves, the ledger holds
the grant, the requester ends it; the refusals are 403."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from playwright.async_api import Browser, BrowserContext, Page

from jmlsync.cli import main
from tests.conftest import stop_service
from tests.console_support import ADMINS, chromium, chromium_missing, scim_client, screenshot
from tests.process.test_console_browser import Console, _open, _sign_in, _until

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        chromium_missing(),
        reason="Debian's chromium is not installed (/usr/bin/chromium); .ci/run installs it",
    ),
    pytest.mark.process,
]

ALICE, BOB, DAVE = "alice@example.org", "bob@example.org", "dave@example.org"

ELIGIBILITY = """
[[eligibility]]
name = "sandbox-admin"
groups = ["oncall"]
grants = [{ target = "sandbox", role = "admin" }]
max_duration = "2h"
approvals = 1
approvers = ["leads"]
require_reason = true
ticket_pattern = "INC-[0-9]+"

[[reviews]]
name = "everything"
scope = "all"
reviewers = ["group:leads"]
"""


@pytest.fixture
async def console(config_path: Path, iam_server: Any) -> AsyncIterator[Console]:
    running = await _open(config_path, iam_server, extra=ELIGIBILITY)
    try:
        yield running
    finally:
        iam_server.logout()
        await stop_service(running.service)
        iam_server.backend.delete(running.client)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def _seed(url: str, eng: bool = False) -> None:
    """Alice an admin, Bob on call (a requester; in eng too if ``eng``), Dave a lead (an
    approver, and the reviewer of every item)."""
    async with scim_client(url) as scim:
        alice = await scim.create_user(ALICE)
        bob = await scim.create_user(BOB)
        dave = await scim.create_user(DAVE)
        await scim.create_group(ADMINS, [alice["id"]])
        await scim.create_group("oncall", [bob["id"]])
        await scim.create_group("leads", [dave["id"]])
        if eng:
            await scim.create_group("eng", [bob["id"]])


def ledger_roles(path: Path, user: str) -> set[str]:
    """What the ledger target holds for ``user`` (read by another process: the test's)."""
    if not path.exists():
        return set()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        try:
            rows = conn.execute("SELECT role FROM grants WHERE user = ?", (user,))
            return {row[0] for row in rows}
        except sqlite3.OperationalError:
            return set()


async def _signed_in(
    browser: Browser, console: Console, email: str, start: str
) -> tuple[BrowserContext, Page]:
    context = await browser.new_context()
    page = await context.new_page()
    assert await _sign_in(page, console, email, start=start) == 200
    assert page.url == console.url + start
    return context, page


async def _csrf(page: Page) -> str:
    token = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    return token


async def test_request_approve_and_end_a_time_bound_grant(
    console: Console, browser: Browser
) -> None:
    await _seed(console.service.url)
    ledger = console.config.parent / "ledger.db"

    bob, bob_page = await _signed_in(browser, console, BOB, "/access")
    await screenshot(bob_page, "access-request-form")
    main = await bob_page.locator("main").inner_text()
    assert "sandbox/admin" in main
    assert "at most 2h" in main
    assert "INC-[0-9]+" in main
    nav = await bob_page.locator("nav").inner_text()
    assert "Time-bound access" in nav
    assert "Approvals" not in nav
    assert "Overview" not in nav

    # Over the maximum: refused by the engine, nothing recorded, the form says why.
    await bob_page.get_by_label("Duration for sandbox/admin").fill("3h")
    await bob_page.get_by_label("Reason for sandbox/admin").fill("fix the deploy")
    await bob_page.get_by_label("Ticket for sandbox/admin").fill("INC-42")
    async with bob_page.expect_navigation() as refused:
        await bob_page.get_by_role("button", name="Request sandbox/admin").click()
    reply = await refused.value
    assert reply is not None
    assert reply.status == 422
    assert "over the maximum of 2h" in await bob_page.locator("#problem").inner_text()
    assert "None yet." in await bob_page.locator("main").inner_text()

    await bob_page.get_by_label("Duration for sandbox/admin").fill("1h")
    await bob_page.get_by_label("Reason for sandbox/admin").fill("fix the deploy")
    await bob_page.get_by_label("Ticket for sandbox/admin").fill("INC-42")
    await bob_page.get_by_role("button", name="Request sandbox/admin").click()
    await bob_page.wait_for_url("**/console/access?done=*")
    assert "Request #1 made: now pending." in await bob_page.locator("#done").inner_text()
    assert "pending" in await bob_page.locator("#request-1").inner_text()
    await screenshot(bob_page, "access-my-requests")

    # A crafted link cannot make the page say anything: only a stored request is reported.
    await bob_page.goto(console.url + "/access?done=Access+granted&verb=made")
    assert await bob_page.locator("#done").count() == 0

    # Bob is no approver: the approvals page and the approve action are 403 for him.
    token = await _csrf(bob_page)
    forbidden = await bob_page.goto(console.url + "/access/approvals")
    assert forbidden is not None
    assert forbidden.status == 403
    approving = await bob.request.post(
        console.url + "/access/1/approve", form={"csrf_token": token, "back": "approvals"}
    )
    assert approving.status == 403

    # Dave, in a second browser context, approves from the inbox.
    dave, dave_page = await _signed_in(browser, console, DAVE, "/access/approvals")
    waiting = await dave_page.locator("#waiting-1").inner_text()
    assert BOB in waiting
    assert "sandbox/admin" in waiting
    assert "INC-42" in waiting
    await screenshot(dave_page, "access-approvals")
    forged = await dave.request.post(
        console.url + "/access/1/approve", form={"csrf_token": "forged", "back": "approvals"}
    )
    missing = await dave.request.post(console.url + "/access/1/approve", form={})
    assert forged.status == 403
    assert missing.status == 403
    await dave_page.get_by_role("button", name="Approve #1").click()
    await dave_page.wait_for_url("**/console/access/approvals?done=*")
    assert "Request #1 approved: now active." in await dave_page.locator("#done").inner_text()
    assert BOB in await dave_page.locator("#active-1").inner_text()
    await screenshot(dave_page, "access-approved")

    async def granted() -> bool:
        return "admin" in ledger_roles(ledger, BOB)

    await _until(granted)

    await bob_page.goto(console.url + "/access")
    assert "active" in await bob_page.locator("#request-1").inner_text()
    await bob_page.get_by_label("More time for #1").fill("30m")
    await bob_page.get_by_role("button", name="Extend #1").click()
    await bob_page.wait_for_url("**/console/access?done=*")
    assert "Request #1 extension asked: now active." in await bob_page.locator("#done").inner_text()
    assert "extension of 30m waiting" in await bob_page.locator("#request-1").inner_text()
    await dave_page.goto(console.url + "/access/approvals")
    assert "30m more" in await dave_page.locator("#waiting-1").inner_text()
    await dave_page.get_by_label("Comment on #1").fill("not tonight")
    await dave_page.get_by_role("button", name="Deny #1").click()
    await dave_page.wait_for_url("**/console/access/approvals?done=*")
    assert "Nothing is waiting for you." in await dave_page.locator("#inbox ~ p").inner_text()
    await bob_page.goto(console.url + "/access")
    await bob_page.get_by_role("button", name="End #1", exact=True).click()
    await bob_page.wait_for_url("**/console/access?done=*")
    assert "Request #1 ended: now ended." in await bob_page.locator("#done").inner_text()
    await screenshot(bob_page, "access-ended")

    async def revoked() -> bool:
        return "admin" not in ledger_roles(ledger, BOB)

    await _until(revoked)

    # A second request, denied with a comment: the requester sees who and why.
    await bob_page.get_by_label("Duration for sandbox/admin").fill("15m")
    await bob_page.get_by_label("Reason for sandbox/admin").fill("once more")
    await bob_page.get_by_label("Ticket for sandbox/admin").fill("INC-43")
    await bob_page.get_by_role("button", name="Request sandbox/admin").click()
    await bob_page.wait_for_url("**/console/access?done=*")
    await dave_page.goto(console.url + "/access/approvals")
    await dave_page.get_by_label("Comment on #2").fill("use the runbook")
    await dave_page.get_by_role("button", name="Deny #2").click()
    await dave_page.wait_for_url("**/console/access/approvals?done=*")
    assert "Request #2 denied: now denied." in await dave_page.locator("#done").inner_text()
    await bob_page.goto(console.url + "/access")
    assert f"denied by {DAVE}: use the runbook" in await bob_page.locator("#request-2").inner_text()
    unknown = await dave.request.post(
        console.url + "/access/abc/approve", form={"csrf_token": await _csrf(dave_page)}
    )
    assert unknown.status == 404

    # The admin sees it on the person page and in the audit chain, with the people as actors.
    alice, alice_page = await _signed_in(browser, console, ALICE, "/audit")
    audit = await alice_page.locator("main table").inner_text()
    assert "access.request" in audit
    assert "access.approve" in audit
    assert "access.end" in audit
    assert DAVE in audit
    assert BOB in audit
    assert (await alice_page.locator("#verify").inner_text()).startswith("Audit chain intact")
    await alice_page.goto(console.url + "/person?user=" + BOB)
    timebound = await alice_page.locator(
        "section", has=alice_page.get_by_role("heading", name="Time-bound grants")
    ).inner_text()
    assert "sandbox/admin" in timebound
    assert "ended" in timebound
    assert DAVE in timebound
    await screenshot(alice_page, "person-timebound")
    for context in (bob, dave, alice):
        await context.close()


def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--config", str(config)])
    return result.exit_code, result.stdout, result.stderr


async def test_a_reviewer_decides_and_the_admin_sees_the_campaign_move(
    console: Console, browser: Browser
) -> None:
    await _seed(console.service.url, eng=True)
    ledger = console.config.parent / "ledger.db"

    async def deployer() -> bool:
        return "deployer" in ledger_roles(ledger, BOB)

    await _until(deployer)  # the eng rule's grant, applied: what the campaign reviews
    code, _out, err = await asyncio.to_thread(_cli, console.config, "review", "start", "everything")
    assert code == 0, err
    alice, alice_page = await _signed_in(browser, console, ALICE, "/overview")
    assert await alice_page.locator("#reviews").inner_text() == "1 undecided in 1 campaign(s)"
    await alice_page.goto(console.url + "/reviews/campaigns")
    progress = await alice_page.locator("main table").inner_text()
    assert "0/1" in progress
    assert "open" in progress
    await screenshot(alice_page, "review-campaigns")

    # Bob holds the grant and reviews nothing: no review pages, and a decision is 403.
    bob, bob_page = await _signed_in(browser, console, BOB, "/access")
    forbidden = await bob_page.goto(console.url + "/reviews")
    assert forbidden is not None
    assert forbidden.status == 403
    campaign = (await alice_page.locator("main table a").first.inner_text()).strip()
    refused = await bob.request.post(
        f"{console.url}/reviews/{campaign}/1/decide",
        form={"csrf_token": await _csrf(bob_page), "decision": "keep"},
    )
    assert refused.status == 403

    dave, dave_page = await _signed_in(browser, console, DAVE, "/reviews")
    row = dave_page.locator(f"#item-{campaign}-1")
    assert BOB in await row.inner_text()
    assert "sandbox/deployer" in await row.inner_text()
    await screenshot(dave_page, "review-my-items")
    await row.get_by_label("Revoke").check()
    await dave_page.get_by_label("Comment on item 1").fill("left the on-call rota")
    await dave_page.get_by_role("button", name="Decide item 1").click()
    await dave_page.wait_for_url("**/console/reviews?decided=*")
    assert f"Item 1 of {campaign}: revoke." in await dave_page.locator("#done").inner_text()
    decided = await dave_page.locator(f"#item-{campaign}-1").inner_text()
    assert f"revoke by {DAVE}: left the on-call rota" in decided
    await screenshot(dave_page, "review-decided")

    await alice_page.reload()
    progress = await alice_page.locator(f"#campaign-{campaign}").inner_text()
    assert "1/1" in progress
    await alice_page.get_by_role("link", name=campaign).click()
    await alice_page.wait_for_url("**/console/reviews/evidence?campaign=*")
    summary = await alice_page.locator("main").inner_text()
    assert f"revoke by {DAVE}" in summary
    assert "left the on-call rota" in summary
    assert "Snapshot sha256" in summary
    await screenshot(alice_page, "review-evidence")

    async def revoked() -> bool:
        return "deployer" not in ledger_roles(ledger, BOB)

    await _until(revoked)
    await alice_page.goto(console.url + "/overview")
    assert await alice_page.locator("#reviews").inner_text() == "0 undecided in 1 campaign(s)"
    await screenshot(alice_page, "overview-after-review")
    await alice_page.goto(console.url + "/audit")
    assert "review.decide" in await alice_page.locator("main table").inner_text()
    for context in (alice, bob, dave):
        await context.close()
