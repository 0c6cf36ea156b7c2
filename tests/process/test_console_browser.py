"""The console in a real browser (Chromium through Playwright) against a real ``jmlsync serve``
and a real OIDC provider (Canaille, from pytest-iam) on loopback, on both store backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.conftest import ServiceProcess, start_service, stop_service
from tests.console_support import (
    ADMINS,
    chromium,
    chromium_missing,
    console_config,
    free_port,
    provider_user,
    register_client,
    scim_client,
    screenshot,
)
from tests.scim_samples import PATCH_OP

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        chromium_missing(),
        reason="Debian's chromium is not installed (/usr/bin/chromium); .ci/run installs it",
    ),
    pytest.mark.process,
]

ALICE, BOB, CAROL = "alice@example.org", "bob@example.org", "carol@example.org"


@dataclass
class Console:
    iam: Any
    client: Any
    config: Path
    port: int
    service: ServiceProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/console"


async def _seed(url: str) -> dict[str, str]:
    """Alice (an admin, in eng) and Bob (in eng only) in the directory; Carol is not."""
    async with scim_client(url) as scim:
        alice = await scim.create_user(ALICE)
        bob = await scim.create_user(BOB)
        await scim.create_group(ADMINS, [alice["id"]])
        await scim.create_group("eng", [alice["id"], bob["id"]])
    return {ALICE: alice["id"], BOB: bob["id"]}


async def _deactivate(url: str, user_id: str) -> None:
    async with scim_client(url) as scim:
        reply = await scim.patch(
            f"/Users/{user_id}",
            {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "path": "active", "value": False}],
            },
        )
        assert reply.status == 200, reply.body


async def _open(config_path: Path, iam_server: Any, idle: int = 1800, extra: str = "") -> Console:
    """A console on a free port; ``extra`` is appended to its configuration."""
    port = free_port()
    client = register_client(iam_server, port)
    console_config(config_path, iam_server.url, client.client_id, port, idle=idle, extra=extra)
    service = await start_service(config_path)
    return Console(iam_server, client, config_path, port, service)


@pytest.fixture
async def console(config_path: Path, iam_server: Any) -> AsyncIterator[Console]:
    running = await _open(config_path, iam_server)
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


async def _sign_in(page: Page, console: Console, email: str, start: str = "/overview") -> int:
    """Sign ``email`` in through the provider from ``start``; the landing page's status."""
    user = provider_user(console.iam, console.client, email)
    console.iam.login(user)
    await page.goto(console.url + start)
    assert "/console/login" in page.url
    async with page.expect_navigation() as navigation:
        await page.get_by_role("link", name="Sign in").click()
    console.iam.logout()
    response = await navigation.value
    assert response is not None
    return response.status


async def _until(probe: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    """Poll ``probe`` until it holds, within a bounded deadline."""
    deadline = time.monotonic() + seconds
    while not await probe():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.25)


async def test_an_admin_signs_in_and_sees_the_state(console: Console, browser: Browser) -> None:
    ids = await _seed(console.service.url)
    context = await browser.new_context()
    page = await context.new_page()

    reply = await page.goto(console.url + "/overview")
    assert reply is not None
    assert "/console/login?next=" in page.url
    await screenshot(page, "sign-in")
    assert await page.get_by_role("heading", level=1).inner_text() == "Sign in"

    assert await _sign_in(page, console, ALICE) == 200
    assert page.url == console.url + "/overview"
    await screenshot(page, "overview")
    assert "Signed in as alice@example.org" in await page.locator("header").inner_text()
    assert await page.locator("#leavers").inner_text() == "0 (0 not cleared)"
    await page.keyboard.press("Tab")  # keyboard first: the skip link, then the navigation
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Home"
    landmarks = [await page.locator(tag).count() for tag in ("header", "nav", "main", "footer")]
    assert landmarks == [1, 1, 1, 1]
    reply = await page.reload()
    assert reply is not None
    headers = reply.headers
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"

    await _deactivate(console.service.url, ids[BOB])  # Bob leaves

    async def leaver_shown() -> bool:
        await page.reload()
        return (await page.locator("#leavers").inner_text()).startswith("1 ")

    await _until(leaver_shown)
    await screenshot(page, "overview-after-leaver")

    async def grant_applied() -> bool:
        await page.goto(console.url + "/person")
        await page.get_by_label("userName").fill("ALICE@example.org")
        await page.get_by_role("button", name="Show").click()
        actual = page.locator("section", has=page.get_by_role("heading", name="Actual grants"))
        return "deployer" in await actual.inner_text()

    await _until(grant_applied)
    await screenshot(page, "person")
    desired = await page.locator(
        "section", has=page.get_by_role("heading", name="Desired grants")
    ).inner_text()
    assert "sandbox" in desired
    assert "rule 1: group eng" in desired
    history = await page.locator(
        "section", has=page.get_by_role("heading", name="History")
    ).inner_text()
    assert "console.sign-in" in history
    assert "user.create" in history

    await page.goto(console.url + "/sla?since=1d")
    await screenshot(page, "sla")
    assert "bob@example.org" in await page.locator("main").inner_text()

    await page.goto(console.url + "/audit")
    await screenshot(page, "audit")
    assert (await page.locator("#verify").inner_text()).startswith("Audit chain intact")
    audit = await page.locator("main table").inner_text()
    assert "console.sign-in" in audit
    assert "alice@example.org" in audit

    # A POST with a forged, or without, CSRF token is refused; the session stays.
    forged = await context.request.post(console.url + "/logout", form={"csrf_token": "forged"})
    missing = await context.request.post(console.url + "/logout", form={})
    assert forged.status == 403
    assert missing.status == 403
    await page.goto(console.url + "/overview")
    assert page.url == console.url + "/overview"

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/console/login?signed_out=1")
    assert "You are signed out" in await page.locator("main").inner_text()
    await page.goto(console.url + "/overview")
    assert "/console/login" in page.url
    await page.goto(console.url + "/audit")  # signed out: even the audit page needs a session
    assert "/console/login" in page.url
    await context.close()


async def test_who_may_not_use_the_console_is_refused(console: Console, browser: Browser) -> None:
    ids = await _seed(console.service.url)
    context = await browser.new_context()
    page = await context.new_page()
    assert await _sign_in(page, console, BOB, start="/") == 200
    await screenshot(page, "home-no-role")
    assert "nothing in the console for you" in await page.locator("main").inner_text()
    reply = await page.goto(console.url + "/overview")  # not an admin
    assert reply is not None
    assert reply.status == 403
    await screenshot(page, "forbidden")
    assert "you may not open this page" in await page.locator("main").inner_text()
    await _deactivate(console.service.url, ids[BOB])  # Bob leaves: his session ends with him
    await page.goto(console.url + "/")
    assert "/console/login" in page.url
    await context.close()

    context = await browser.new_context()  # Carol: known to the provider, not the directory
    page = await context.new_page()
    assert await _sign_in(page, console, CAROL) == 403
    await screenshot(page, "refused")
    assert "not an active user of the directory" in await page.locator("main").inner_text()
    reply = await page.goto(console.url + "/overview")
    assert "/console/login" in page.url
    await context.close()


async def test_a_session_survives_a_restart_and_ends_when_idle(
    config_path: Path, iam_server: Any, browser: Browser
) -> None:
    idle = 6
    console = await _open(config_path, iam_server, idle=idle)
    try:
        await _seed(console.service.url)
        context = await browser.new_context()
        page = await context.new_page()
        assert await _sign_in(page, console, ALICE) == 200
        await stop_service(console.service)
        console.service = await start_service(config_path)  # the session is in the store
        await page.goto(console.url + "/overview")
        assert page.url == console.url + "/overview"
        assert "Signed in as alice@example.org" in await page.locator("header").inner_text()
        used = time.monotonic()
        await asyncio.sleep(idle + 0.5 - (time.monotonic() - used))  # only time can pass here
        await page.goto(console.url + "/overview")
        assert "/console/login" in page.url
        await context.close()
    finally:
        await stop_service(console.service)
        iam_server.backend.delete(console.client)
