"""The alert outbox on both backends: rows, the de-duplication window, leases, delivery to a
webhook with retries, metrics and housekeeping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from jmlsync.config import load_settings
from jmlsync.ops.alert_delivery import Deliverer, DeliveryPolicy
from jmlsync.ops.alerts import Alerts, LogAlerts, OutboxAlerts
from jmlsync.runtime import open_store
from jmlsync.store.assurance import SqlAssurance
from jmlsync.store.directory import SqlStore
from jmlsync.store.outbox import SqlOutbox
from tests.webhook import SECRET, Receiver, webhook_receiver

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as running:
        yield running


@pytest.fixture
async def store(config_path: Path) -> AsyncIterator[SqlStore]:
    opened = await open_store(load_settings(config_path))
    try:
        yield opened
    finally:
        await opened.close()


NO_WAIT = DeliveryPolicy(attempts=3, timeout=5, initial_wait=0, max_wait=0)


def sink(outbox: SqlOutbox, clock: Clock, *, routed: bool = True) -> OutboxAlerts:
    return OutboxAlerts(outbox, clock=clock, dedupe=HOUR, routed=routed)


async def test_alerts_are_rows_deduplicated_in_the_store(store: SqlStore) -> None:
    outbox, clock = SqlOutbox(store.db), Clock()
    first = sink(outbox, clock)
    await first.alert("sla_breach", "leaver late", user="gus@x.io", left_at="then")
    clock.now += timedelta(minutes=10)
    # A second sink (another process, or this one after a restart) sees the same window.
    await sink(outbox, clock).alert("sla_breach", "leaver late again", user="gus@x.io")
    await first.alert("sla_breach", "another leaver late", user="hal@x.io")
    rows = await outbox.rows()
    assert [(r.text, r.state) for r in rows] == [
        ("another leaver late", "pending"),
        ("leaver late again", "suppressed"),
        ("leaver late", "pending"),
    ]
    assert rows[2].key == "gus@x.io"
    assert rows[2].fields == {"user": "gus@x.io", "left_at": "then"}
    assert [r.text for r in await outbox.rows(undelivered=True)] == [
        "another leaver late",
        "leaver late",
    ]
    clock.now += HOUR  # the window has passed: the same alert is pending again
    await first.alert("sla_breach", "leaver later", user="gus@x.io")
    assert (await outbox.rows(limit=1))[0].state == "pending"
    stats = await outbox.stats()
    assert stats.undelivered == 3
    assert stats.oldest_created_at == T0


async def test_without_a_webhook_alerts_are_kept_as_history(store: SqlStore) -> None:
    outbox = SqlOutbox(store.db)
    await sink(outbox, Clock(), routed=False).alert("guard_tripped", "held", key="cli")
    (row,) = await outbox.rows()
    assert row.state == "unrouted"
    assert (await outbox.stats()).undelivered == 0


async def test_a_claimed_row_is_leased_to_one_deliverer(store: SqlStore) -> None:
    outbox, clock = SqlOutbox(store.db), Clock()
    await sink(outbox, clock).alert("dead_letter", "bob failed", user="bob@x.io")
    lease = timedelta(seconds=30)
    row = await outbox.claim("a", clock(), lease)
    assert row is not None
    assert await outbox.claim("b", clock(), lease) is None
    assert await outbox.next_due() == clock() + lease
    clock.now += timedelta(seconds=31)  # "a" died: its lease ran out
    taken = await outbox.claim("b", clock(), lease)
    assert taken is not None
    assert taken.id == row.id
    await outbox.delivered(row.id, "a", clock(), 1)  # a late "a" cannot settle b's row
    assert (await outbox.rows())[0].state == "pending"
    await outbox.delivered(row.id, "b", clock(), 1)
    (done,) = await outbox.rows()
    assert (done.state, done.attempts, done.delivered_at is not None) == ("delivered", 1, True)
    assert await outbox.claim("c", clock() + HOUR, lease) is None
    assert await outbox.next_due() is None


async def test_delivery_posts_each_row_once_with_retries(
    store: SqlStore, receiver: Receiver
) -> None:
    outbox, clock = SqlOutbox(store.db), Clock()
    alerts = Alerts(LogAlerts(), sink(outbox, clock))
    await alerts.alert("sla_breach", "leaver late", user="gus@x.io")
    await alerts.alert("sla_breach", "leaver late again", user="gus@x.io")
    await alerts.alert("sla_breach", "another leaver late", user="hal@x.io")
    receiver.statuses = [500]
    async with aiohttp.ClientSession() as http:
        deliverer = Deliverer(outbox, http, receiver.url, owner="me", clock=clock, policy=NO_WAIT)
        assert await deliverer.deliver_due() == 2
        assert await deliverer.deliver_due() == 0
    assert len(receiver.refused) == 1
    assert [r["user"] for r in receiver.accepted] == ["gus@x.io", "hal@x.io"]
    first = receiver.accepted[0]
    assert first["text"] == "[jmlsync] leaver late"
    assert first["kind"] == "sla_breach"
    assert isinstance(first["alert_id"], int)
    rows = {r.text: r for r in await outbox.rows()}
    assert rows["leaver late"].attempts == 2
    assert rows["leaver late"].state == "delivered"
    assert (await outbox.stats()).undelivered == 0


@pytest.mark.parametrize("answer", [200, 503])
async def test_a_stop_lets_the_post_in_progress_settle(
    store: SqlStore, receiver: Receiver, answer: int
) -> None:
    outbox, clock = SqlOutbox(store.db), Clock()
    await sink(outbox, clock).alert("sla_breach", "leaver late", user="gus@x.io")
    receiver.hang = True
    async with aiohttp.ClientSession() as http:
        deliverer = Deliverer(outbox, http, receiver.url, owner="me", clock=clock, policy=NO_WAIT)
        running = asyncio.create_task(deliverer.run())
        await receiver.wait_until(lambda: len(receiver.hung) == 1)
        deliverer.stop()  # a shutdown while the webhook holds the post
        receiver.release(answer)
        await asyncio.wait_for(running, 10)  # run() returns by itself, not cancelled
    (row,) = await outbox.rows()
    if answer == 200:
        # Taken by the webhook: marked delivered, so a restart does not post it again.
        assert (row.state, len(receiver.accepted)) == ("delivered", 1)
    else:
        # Refused: no further attempt after the stop; the row waits for the next start.
        assert (row.state, row.last_error, row.attempts) == ("pending", "interrupted", 1)


async def test_a_failed_round_waits_and_never_stores_the_url(
    store: SqlStore, receiver: Receiver
) -> None:
    outbox, clock = SqlOutbox(store.db), Clock()
    await sink(outbox, clock).alert("guard_tripped", "held", key="full")
    receiver.statuses = [503] * 3
    policy = DeliveryPolicy(attempts=3, timeout=5, initial_wait=0, max_wait=0)
    async with aiohttp.ClientSession() as http:
        deliverer = Deliverer(outbox, http, receiver.url, owner="me", clock=clock, policy=policy)
        assert await deliverer.deliver_due() == 0
        (row,) = await outbox.rows(undelivered=True)
        assert (row.attempts, row.last_error) == (3, "webhook answered status 503")
        assert row.next_attempt_at is not None
        assert row.next_attempt_at > row.created_at
        assert await deliverer.deliver_due() == 0  # not due yet
        assert await outbox.retry(clock()) == [row.id]  # `jmlsync alerts retry`
        assert await deliverer.deliver_due() == 1
    assert len(receiver.accepted) == 1
    everything = json.dumps([r.__dict__ for r in await outbox.rows()])
    assert SECRET not in everything


async def test_a_command_flushes_only_its_own_rows_within_a_bound(
    store: SqlStore, receiver: Receiver
) -> None:
    outbox, clock = SqlOutbox(store.db), Clock()
    await sink(outbox, clock).alert("dead_letter", "someone else's", user="a@x.io")
    mine = sink(outbox, clock)
    await mine.alert("guard_tripped", "held", key="cli")
    async with aiohttp.ClientSession() as http:
        deliverer = Deliverer(outbox, http, receiver.url, owner="cli", clock=clock, policy=NO_WAIT)
        assert await deliverer.flush(mine.written, 5) == 0
        receiver.statuses = [503] * 3
        await mine.alert("guard_tripped", "held again", key="cli2")
        assert await deliverer.flush(mine.written, 5) == 1
    assert [r["text"] for r in receiver.accepted] == ["[jmlsync] held"]


async def test_housekeeping_prunes_settled_alerts(store: SqlStore) -> None:
    outbox, clock = SqlOutbox(store.db), Clock()
    alerts = sink(outbox, clock)
    await alerts.alert("dead_letter", "old, delivered", user="a@x.io")
    await alerts.alert("dead_letter", "old, never delivered", user="b@x.io")
    row = await outbox.claim("me", clock(), timedelta(seconds=30))
    assert row is not None
    await outbox.delivered(row.id, "me", clock(), 1)
    pruned = await SqlAssurance(store.db).housekeeping(T0 + timedelta(days=2), timedelta(days=1))
    assert pruned["alert_outbox"] == 1
    assert pruned["alert_windows"] == 2
    assert [r.text for r in await outbox.rows()] == ["old, never delivered"]


async def test_a_command_waits_for_a_row_the_service_is_posting(
    store: SqlStore, receiver: Receiver
) -> None:
    outbox, clock = SqlOutbox(store.db), Clock()
    mine = sink(outbox, clock)
    await mine.alert("guard_tripped", "held", key="cli")
    await mine.alert("guard_tripped", "held too", key="cli2")
    first = await outbox.claim("service", clock(), timedelta(seconds=30))
    second = await outbox.claim("service", clock(), timedelta(seconds=30))
    assert first is not None
    assert second is not None
    async with aiohttp.ClientSession() as http:
        deliverer = Deliverer(outbox, http, receiver.url, owner="cli", clock=clock, policy=NO_WAIT)
        flushing = asyncio.create_task(deliverer.flush(mine.written, 10))
        await outbox.delivered(first.id, "service", clock(), 1)
        await outbox.failed(second.id, "service", "webhook timed out", 1, clock())
        assert await flushing == 0  # the second, released, was posted by the command
        await mine.alert("guard_tripped", "held again", key="cli3")
        third = await outbox.claim("service", clock(), timedelta(seconds=30))
        assert third is not None
        assert await deliverer.flush([third.id], 0.5) == 1  # bounded: the service still holds it
    assert [a["text"] for a in receiver.accepted] == ["[jmlsync] held too"]


async def test_a_throttling_webhook_is_waited_for_as_it_asks(
    store: SqlStore, receiver: Receiver
) -> None:
    outbox, clock = SqlOutbox(store.db), Clock()
    await sink(outbox, clock).alert("privileged_grant", "admin granted", user="ann@x.io")
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    receiver.statuses, receiver.retry_after = [429, 429], "0.75"
    policy = DeliveryPolicy(attempts=3, timeout=5, initial_wait=0, max_wait=0.5, sleep=sleep)
    async with aiohttp.ClientSession() as http:
        deliverer = Deliverer(outbox, http, receiver.url, owner="me", clock=clock, policy=policy)
        assert await deliverer.deliver_due() == 1
    assert waits == [0.5, 0.5]  # Retry-After, capped by max_wait
    assert len(receiver.accepted) == 1
