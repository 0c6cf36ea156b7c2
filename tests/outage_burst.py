"""A burst of SCIM changes against a real ``jmlsync serve`` while its store goes away and
comes back: what both store-outage tests (SQLite disk full, PostgreSQL stopped) assert."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import TOKENS, ServiceProcess
from tests.process.test_crash import ledger_state
from tests.scim_samples import PATCH_OP

SETTINGS = """
[pipeline]
workers = 4
poll_seconds = 0.05
retry_base_seconds = 0
call_initial_wait_seconds = 0
call_max_wait_seconds = 0

[reconcile]
schedule = ""

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "engineering"
grants = [{ target = "sandbox", role = "developer" }]
"""
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
HEADERS = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/scim+json"}


@dataclass
class Burst:
    """What the IdP side saw."""

    joined: list[str] = field(default_factory=list)
    unavailable: int = 0
    without_retry_after: int = 0
    unexpected: list[tuple[int, Any]] = field(default_factory=list)


async def _deadline(seconds: float, what: str, ready: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``ready`` (another process's state: there is no event to await) until it holds."""
    try:
        async with asyncio.timeout(seconds):
            while not await ready():  # noqa: ASYNC110 - another process's state
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {seconds}s: {what}") from None


async def _readyz(http: aiohttp.ClientSession, service: ServiceProcess) -> tuple[int, Any]:
    root = service.url.split("/scim/")[0]
    async with asyncio.timeout(10), http.get(f"{root}/readyz") as reply:
        return reply.status, await reply.json()


async def run_outage(  # noqa: C901 - one fault script, read top to bottom
    service: ServiceProcess,
    ledger: Path,
    *,
    go_down: Callable[[], Awaitable[None]],
    come_back: Callable[[], Awaitable[None]],
    min_outage_seconds: float,
    while_down: Callable[[], Awaitable[None]],
    after: Callable[[], Awaitable[None]],
) -> Burst:
    """Join users in a burst; take the store away mid-burst and bring it back; then a
    leaver. Asserts 503 + Retry-After and /readyz 503 during the outage, /readyz 200 after,
    and a ledger that matches the group exactly, the leaver revoked, with no restart."""
    burst = Burst()
    counter = itertools.count()
    stop_burst = asyncio.Event()
    async with aiohttp.ClientSession(headers=HEADERS) as http:
        async with http.post(
            f"{service.url}/Groups", json={"schemas": [GROUP], "displayName": "engineering"}
        ) as reply:
            assert reply.status == 201, await reply.text()
            group_id = (await reply.json())["id"]

        async def answered(reply: aiohttp.ClientResponse, ok: int) -> Any:
            body = await reply.json(content_type=None) if reply.status != 204 else None
            if reply.status == ok:
                return body if body is not None else True
            if reply.status == 503:
                burst.unavailable += 1
                if not reply.headers.get("Retry-After", "").isdigit():
                    burst.without_retry_after += 1
                assert body is not None, "a 503 without a SCIM Error body"
                assert body["status"] == "503", body
            else:
                burst.unexpected.append((reply.status, body))
            return None

        async def one() -> None:
            name = f"user{next(counter)}@x.io"
            async with http.post(
                f"{service.url}/Users", json={"schemas": [USER], "userName": name}
            ) as reply:
                created = await answered(reply, 201)
            if created is None:
                return  # refused: an IdP would retry; nothing was acknowledged
            member = [{"value": created["id"]}]
            add = {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "add", "path": "members", "value": member}],
            }
            async with http.patch(f"{service.url}/Groups/{group_id}", json=add) as reply:
                if await answered(reply, 204) is not None:
                    burst.joined.append(name)

        async def keep_going() -> None:
            async def lane() -> None:
                while not stop_burst.is_set():
                    await one()

            await asyncio.gather(*(lane() for _ in range(6)))

        running = asyncio.create_task(keep_going())
        try:
            await _deadline(30, "20 joins before the outage", _joined_at_least(burst, 20))
            await go_down()
            down_at = time.monotonic()
            unready: list[Any] = []

            async def outage_seen() -> bool:
                status, body = await _readyz(http, service)
                if status == 503:
                    unready.append(body)
                return bool(unready) and burst.unavailable > 0

            await _deadline(20, "503 answers and /readyz 503 during the outage", outage_seen)
            await while_down()
            await asyncio.sleep(max(0.0, min_outage_seconds - (time.monotonic() - down_at)))
            before = len(burst.joined)
            await come_back()
            await _deadline(30, "10 joins after the recovery", _joined_at_least(burst, before + 10))
        finally:
            stop_burst.set()
            await running

        async def ready_again() -> bool:
            return (await _readyz(http, service))[0] == 200

        await _deadline(30, "/readyz 200 after the recovery", ready_again)
        await after()
        leaver = burst.joined[0]
        async with http.get(
            f"{service.url}/Users", params={"filter": f'userName eq "{leaver}"'}
        ) as reply:
            leaver_id = (await reply.json())["Resources"][0]["id"]
        deactivate = {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        }
        async with http.patch(f"{service.url}/Users/{leaver_id}", json=deactivate) as reply:
            assert reply.status == 200, await reply.text()
        async with http.get(f"{service.url}/Groups/{group_id}") as reply:
            member_ids = {m["value"] for m in (await reply.json())["members"]}
        async with http.get(
            f"{service.url}/Users", params={"count": "10000", "attributes": "userName"}
        ) as reply:
            names = {r["id"]: r["userName"] for r in (await reply.json())["Resources"]}
        members = {names[i] for i in member_ids}

        async def converged() -> bool:
            return ledger_state(ledger)[0] == members - {leaver}

        await _deadline(30, "the ledger matches the group, the leaver revoked", converged)

    assert set(burst.joined) <= members, "an acknowledged membership was lost"
    crashes = [line for line in service.log if "Traceback" in line][:2]
    assert burst.unexpected == [], (burst.unexpected[:5], crashes)
    assert burst.without_retry_after == 0
    assert service.process.returncode is None, "the service must survive without a restart"
    assert unready, "no /readyz 503 was seen"
    holders, writes = ledger_state(ledger)
    assert leaver not in holders
    assert set(writes.values()) == {1}, f"duplicate grants: {writes}"
    return burst


async def status(config: Path) -> tuple[int, str]:
    """``jmlsync status`` as an operator runs it: its own process; (exit code, output)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jmlsync",
        "status",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


def _joined_at_least(burst: Burst, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(burst.joined) >= count

    return check


def assert_outage_logged_once(log: list[str], burst: Burst) -> None:
    """The outage is a few log lines, not one per refused request, and no traceback."""
    text = "".join(log)
    started = text.count("the store refuses writes")
    ended = text.count("the store takes writes again")
    assert started >= 1, text[-3000:]
    assert started == ended, (started, ended)
    # A store that fails, lets a write through and fails again is a new outage: still far
    # fewer lines than refused requests.
    assert started * 10 <= burst.unavailable, (started, burst.unavailable)
    failures = [line for line in log if "Traceback" in line or "internal error" in line]
    assert failures == [], failures[:2]
