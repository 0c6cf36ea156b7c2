"""Durable alerts through real processes: the guard alert of `jmlsync reconcile` reaches the
webhook before the command exits, an alert survives SIGKILL of `jmlsync serve` and is
delivered once after the restart, the de-duplication window survives a restart, and among
replicas one posts each alert once."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jmlsync.config import load_settings
from jmlsync.domain.directory import Change, Member, MemberOp
from jmlsync.runtime import open_store
from jmlsync.store.outbox import AlertRow, SqlOutbox
from jmlsync.targets.ledger import LedgerTarget
from tests.conftest import (
    TOKENS,
    ServiceProcess,
    kill_service,
    start_service,
    stop_service,
    write_config,
)
from tests.postgres import fresh_database
from tests.webhook import SECRET, Receiver, webhook_receiver

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
USERS = ("ann@x.io", "ben@x.io", "cyd@x.io")
RULES = """
[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "engineering"
grants = [{ target = "sandbox", role = "developer" }]

[reconcile]
schedule = ""
max_revocations = 1
"""


def alerting(url: str, extra: str = "") -> str:
    """An [alerts] section posting to ``url``, with waits short enough for a test."""
    return f"""
[alerts]
webhook_url = "{url}"
timeout_seconds = 2
retry_max_wait_seconds = 0.05
auth_failures_per_minute = 1
{extra}
"""


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as running:
        yield running


def configure(config: Path, text: str) -> None:
    config.write_text(config.read_text() + text)


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    """Run the real `jmlsync` command; its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jmlsync",
        *args,
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def outbox_rows(config: Path) -> list[AlertRow]:
    store = await open_store(load_settings(config))
    try:
        return await SqlOutbox(store.db).rows()
    finally:
        await store.close()


def _doc(kind: str, **attrs: Any) -> dict[str, Any]:
    return {"schemas": [f"urn:ietf:params:scim:schemas:core:2.0:{kind}"], **attrs}


async def engineers_granted(config: Path) -> str:
    """Users in the mapped group, granted by `jmlsync reconcile`; the group's id."""
    store = await open_store(load_settings(config))
    try:
        ids = [
            (await store.create("User", Change(doc=_doc("User", userName=u)), NOW)).id
            for u in USERS
        ]
        change = Change(
            doc=_doc("Group", displayName="engineering"),
            members=(MemberOp("replace", items=tuple(Member(i) for i in ids)),),
        )
        group = (await store.create("Group", change, NOW)).id
    finally:
        await store.close()
    code, _, err = await cli(config, "reconcile", "--max-revocations", "10")
    assert code == 0, err
    return group


async def everyone_leaves(config: Path, group: str) -> None:
    store = await open_store(load_settings(config))
    try:

        def empty(current: Any) -> Change:
            return Change(doc=current.doc, members=(MemberOp("replace", items=()),))

        await store.update("Group", group, empty, NOW)
    finally:
        await store.close()


async def test_the_guard_alert_of_reconcile_is_delivered_before_it_exits(
    config_path: Path, receiver: Receiver
) -> None:
    configure(config_path, RULES + alerting(receiver.url))
    group = await engineers_granted(config_path)
    await everyone_leaves(config_path, group)
    code, _, err = await cli(config_path, "reconcile")
    assert code == 3, err
    assert "revokes 3 grants" in err
    # No waiting: the command posted the alert before it exited. The three grants it held
    # back are drift too (on a managed role, no longer desired), alerted like the scheduler's.
    assert sorted(a["kind"] for a in receiver.accepted) == ["guard_tripped"] + 3 * [
        "unmanaged_drift"
    ]
    (alert,) = [a for a in receiver.accepted if a["kind"] == "guard_tripped"]
    assert alert["text"].startswith("[jmlsync] held: the plan revokes 3 grants")
    assert alert["revocations"] == 3
    assert "queued for the service" not in err
    ledger = await LedgerTarget.open("sandbox", config_path.parent / "ledger.db")
    try:
        assert await ledger.grants_of("ann@x.io") == {"developer"}  # held: nothing changed
    finally:
        await ledger.close()
    rows = await outbox_rows(config_path)
    assert {r.state for r in rows} == {"delivered"}
    (row,) = [r for r in rows if r.kind == "guard_tripped"]
    assert row.id == alert["alert_id"]


async def test_an_undelivered_alert_is_listed_and_retried(
    config_path: Path, receiver: Receiver
) -> None:
    configure(config_path, RULES + alerting(receiver.url))
    group = await engineers_granted(config_path)
    await everyone_leaves(config_path, group)
    receiver.status = 503
    code, _, err = await cli(config_path, "reconcile")
    assert code == 3
    assert "4 alert(s) not delivered yet: queued for the service to deliver" in err
    code, out, _ = await cli(config_path, "alerts", "list", "--undelivered", "--format", "json")
    assert code == 0
    (row,) = [r for r in json.loads(out) if r["kind"] == "guard_tripped"]
    assert row["kind"] == "guard_tripped"
    assert row["state"] == "pending"
    assert row["attempts"] >= 5  # at least one round of posts, each refused
    assert row["last_error"] == "webhook answered status 503"
    assert row["fields"] == {"revocations": 3, "key": "cli"}
    code, out, _ = await cli(config_path, "alerts", "list")
    assert code == 0
    assert "failing" in out
    assert "webhook answered status 503" in out
    assert SECRET not in out + err

    receiver.status = 200
    code, out, err = await cli(config_path, "alerts", "retry")
    assert (code, out.strip()) == (0, "4 alert(s) due again: 4 delivered"), err
    assert row["id"] in [a["alert_id"] for a in receiver.accepted]
    assert len(receiver.accepted) == 4
    code, out, _ = await cli(config_path, "alerts", "list", "--undelivered", "--format", "json")
    assert (code, json.loads(out)) == (0, [])
    code, out, _ = await cli(config_path, "alerts", "retry", str(row["id"]))
    assert code == 1


async def test_a_command_that_cannot_read_the_webhook_leaves_the_alert_queued(
    config_path: Path,
) -> None:
    (config_path.parent / "hook").mkdir()  # unreadable as a file, whoever runs the test
    configure(config_path, RULES + '[alerts]\nwebhook_url_file = "hook"\n')
    group = await engineers_granted(config_path)
    await everyone_leaves(config_path, group)
    code, _, err = await cli(config_path, "reconcile")
    assert code == 3
    assert "cannot read [alerts].webhook_url_file: Is a directory" in err
    assert "4 alert(s) not delivered yet: queued for the service to deliver" in err
    assert "Traceback" not in err
    (row,) = [r for r in await outbox_rows(config_path) if r.kind == "guard_tripped"]
    assert (row.kind, row.state) == ("guard_tripped", "pending")
    code, _, err = await cli(config_path, "serve")  # the service must not run deaf
    assert code == 1
    assert "cannot read [alerts].webhook_url_file: Is a directory" in err
    assert "Traceback" not in err


async def refuse_tokens(service: ServiceProcess, count: int = 2) -> None:
    """Requests with a bad token: more than `auth_failures_per_minute` raise an alert."""
    headers = {"Authorization": "Bearer not-a-valid-token-at-all-xxxxxxxxxx"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for _ in range(count):
            async with http.get(f"{service.url}/Users") as reply:
                assert reply.status in (401, 429)


async def metric(service: ServiceProcess, name: str) -> float:
    root = service.url.split("/scim/")[0]
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{root}/metrics") as reply,
    ):
        text = await reply.text()
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


async def settled(config: Path, state: str, count: int = 1) -> list[AlertRow]:
    """Poll the outbox (another process writes it) until ``count`` rows are in ``state``."""
    async with asyncio.timeout(30):
        while True:
            rows = [r for r in await outbox_rows(config) if r.state == state]
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.1)


@pytest.mark.process
@pytest.mark.parametrize("webhook", ["refusing", "hanging"])
async def test_an_alert_interrupted_by_sigkill_is_delivered_once_after_restart(
    config_path: Path, receiver: Receiver, webhook: str
) -> None:
    configure(config_path, alerting(receiver.url))
    receiver.status = 503
    receiver.hang = webhook == "hanging"
    service = await start_service(config_path)
    try:
        await refuse_tokens(service)
        await receiver.wait_until(lambda: len(receiver.refused) >= 2 or len(receiver.hung) >= 1)
        assert await metric(service, "jmlsync_alerts_undelivered") == 1
        assert await metric(service, "jmlsync_alerts_oldest_undelivered_age_seconds") > 0
        assert await kill_service(service) == -signal.SIGKILL
    finally:
        await stop_service(service)
    killed = "".join(service.log)
    assert receiver.accepted == []
    receiver.status = 200
    receiver.release()  # a post held at the kill is answered now, to a dead process

    service = await start_service(config_path)
    try:
        await receiver.wait_until(lambda: len(receiver.accepted) >= 1)
        (row,) = await settled(config_path, "delivered")
        assert await metric(service, "jmlsync_alerts_undelivered") == 0
    finally:
        assert await stop_service(service) == 0
    (alert,) = receiver.accepted
    assert (alert["kind"], alert["alert_id"]) == ("auth_failures", row.id)
    assert {a["alert_id"] for a in receiver.refused + receiver.hung} == {row.id}
    assert SECRET not in killed + "".join(service.log)


@pytest.mark.process
async def test_no_duplicate_after_a_restart_inside_the_dedupe_window(
    config_path: Path, receiver: Receiver
) -> None:
    configure(config_path, alerting(receiver.url))
    service = await start_service(config_path)
    try:
        await refuse_tokens(service)
        await receiver.wait_until(lambda: len(receiver.accepted) >= 1)
    finally:
        assert await stop_service(service) == 0

    service = await start_service(config_path)
    try:
        await refuse_tokens(service)
        (suppressed,) = await settled(config_path, "suppressed")
    finally:
        assert await stop_service(service) == 0
    assert any("ALERT auth_failures" in line for line in service.log)  # logged all the same
    assert [a["kind"] for a in receiver.accepted] == ["auth_failures"]
    assert suppressed.key == "auth_failures"
    assert receiver.refused == []


@pytest.mark.postgresql
@pytest.mark.process
async def test_among_replicas_one_delivers_each_alert_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    async with fresh_database() as url:
        config = write_config(tmp_path, extra=alerting(receiver.url))
        config.write_text(
            config.read_text().replace('url = "sqlite:///state/jmlsync.db"', f'url = "{url}"')
        )
        first = await start_service(config)
        second = await start_service(config)
        try:
            # The second replica raises it; whichever holds the leadership posts it.
            await refuse_tokens(second)
            await receiver.wait_until(lambda: len(receiver.accepted) >= 1)
            (row,) = await settled(config, "delivered")
        finally:
            assert await stop_service(second) == 0
            assert await stop_service(first) == 0
    assert [a["alert_id"] for a in receiver.accepted] == [row.id]
    delivered = f"alert {row.id} (auth_failures) delivered"
    logs = ["".join(first.log), "".join(second.log)]
    assert sum(1 for log in logs if delivered in log) == 1
