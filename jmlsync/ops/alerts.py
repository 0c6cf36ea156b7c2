"""Alerts: what an operator must hear about, in the log and, when configured, on a webhook.

Kinds: ``privileged_grant``, ``unmanaged_drift``, ``sla_breach``, ``guard_tripped``,
``dead_letter``, ``protected_user``, ``auth_failures``, ``leavers_paused``, and those of
access reviews (``review_started``, ``review_reminder``, ``review_overdue``,
``review_auto_revoked``) and
time-bound access (:mod:`jmlsync.engine.timebound_alerts`). Every alert is an
ERROR log line at once and a row of the store's outbox (:mod:`jmlsync.store.outbox`), which
:mod:`jmlsync.ops.alert_delivery` posts to the webhook: an alert survives exit and crash, and
alerts with the same kind and key are posted once per de-duplication window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from jmlsync.ports import AlertSink
from jmlsync.store.outbox import PENDING, SqlOutbox, add_alert

__all__ = [
    "AlertSink",
    "Alerts",
    "AuthFailureWatch",
    "LogAlerts",
    "OutboxAlerts",
    "StagedAlert",
    "alert_key",
    "stage_alert",
]

log = logging.getLogger("jmlsync.alerts")


class LogAlerts:
    """Alerts as ERROR log lines: always on, whatever else is configured."""

    async def alert(self, kind: str, text: str, **fields: Any) -> None:
        log.error("ALERT %s: %s", kind, text, extra={"fields": {"alert": kind, **fields}})


def alert_key(fields: Mapping[str, Any]) -> str:
    """What tells two alerts of one kind apart for de-duplication: ``key``, else ``user``."""
    return str(fields.get("key") or fields.get("user") or "")


class OutboxAlerts:
    """Alerts written as rows of the store's outbox, for the deliverer to post.

    A duplicate (same kind and key) inside ``dedupe`` is written as suppressed and never
    posted; the window is in the store, so it holds across restarts and replicas. ``routed``
    is false when no webhook is configured: the row is kept as history, with nothing to
    deliver. ``on_written`` hears the id of every row to deliver (to wake the deliverer).
    """

    def __init__(
        self,
        outbox: SqlOutbox,
        *,
        clock: Callable[[], datetime],
        dedupe: timedelta,
        routed: bool,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.clock = clock
        self.dedupe = dedupe
        self.routed = routed
        self._on_written = on_written
        #: The rows this process wrote to deliver: a CLI command delivers them before it exits.
        self.written: list[int] = []

    async def alert(self, kind: str, text: str, **fields: Any) -> None:
        alert_id, state = await self.outbox.add(
            kind,
            alert_key(fields),
            text,
            fields,
            now=self.clock(),
            dedupe=self.dedupe,
            routed=self.routed,
        )
        if state == PENDING:
            self.wrote(alert_id)

    def stage(self, kind: str, text: str, fields: dict[str, Any]) -> StagedAlert:
        """The alert, its row written with an event's transaction (see :class:`StagedAlert`)."""
        return StagedAlert(self, kind, text, fields)

    def wrote(self, alert_id: int) -> None:
        """Note a committed row to deliver, and wake the deliverer."""
        self.written.append(alert_id)
        if self._on_written is not None:
            self._on_written(alert_id)


class Alerts:
    """Every configured sink: the log always, the webhook when configured."""

    def __init__(self, *sinks: AlertSink) -> None:
        self.sinks = sinks or (LogAlerts(),)

    def stage(self, kind: str, text: str, fields: dict[str, Any]) -> StagedAlert:
        """The alert, its outbox rows written with an event's transaction."""
        return StagedAlert(self, kind, text, fields)

    async def alert(self, kind: str, text: str, **fields: Any) -> None:
        for sink in self.sinks:
            try:
                await sink.alert(kind, text, **fields)
            except Exception:
                log.exception("an alert sink failed")


class StagedAlert:
    """An alert to write in the transaction of the event that raises it (a dead letter), so
    that a crash between the event and its alert cannot lose the alert.

    :meth:`write` adds the outbox rows inside the caller's transaction body; once that
    transaction committed, :meth:`after_commit` logs the alert and wakes the deliverer. Sinks
    without an outbox (a test's recorder) just get :meth:`AlertSink.alert` after the commit.
    """

    def __init__(self, sink: AlertSink, kind: str, text: str, fields: dict[str, Any]) -> None:
        self._kind, self._text, self._fields = kind, text, fields
        sinks = sink.sinks if isinstance(sink, Alerts) else (sink,)
        self._outboxes = [s for s in sinks if isinstance(s, OutboxAlerts)]
        self._others = [s for s in sinks if not isinstance(s, OutboxAlerts)]
        self._written: list[tuple[OutboxAlerts, int, str]] = []

    async def write(self, conn: Any) -> None:
        """Add the alert's outbox rows with ``conn``, the caller's transaction."""
        self._written = []  # a retried transaction body starts again
        for outbox in self._outboxes:
            alert_id, state = await add_alert(
                conn,
                self._kind,
                alert_key(self._fields),
                self._text,
                self._fields,
                now=outbox.clock(),
                dedupe=outbox.dedupe,
                routed=outbox.routed,
            )
            self._written.append((outbox, alert_id, state))

    async def send(self) -> None:
        """The whole alert now, its rows in a transaction of their own."""
        await Alerts(*self._outboxes, *self._others).alert(self._kind, self._text, **self._fields)

    async def after_commit(self) -> None:
        """The rest of the alert, once the transaction holding its rows committed."""
        for outbox, alert_id, state in self._written:
            if state == PENDING:
                outbox.wrote(alert_id)
        await Alerts(*self._others).alert(self._kind, self._text, **self._fields)


def stage_alert(sink: AlertSink, kind: str, text: str, **fields: Any) -> StagedAlert:
    """A :class:`StagedAlert` for ``sink`` (written with the event, sent after its commit)."""
    return StagedAlert(sink, kind, text, fields)


class AuthFailureWatch:
    """Alerts when more than ``limit`` requests a minute are refused for their token: a
    misconfigured IdP after a rotation, or someone guessing."""

    def __init__(self, alerts: AlertSink, limit: int) -> None:
        self._alerts = alerts
        self._limit = limit
        self._times: deque[float] = deque()
        self._alerted_at = float("-inf")
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, remote: str) -> None:
        now = time.monotonic()
        self._times.append(now)
        while self._times and now - self._times[0] > 60:
            self._times.popleft()
        if len(self._times) > self._limit and now - self._alerted_at > 60:
            self._alerted_at = now
            task = asyncio.get_running_loop().create_task(
                self._alerts.alert(
                    "auth_failures",
                    f"{len(self._times)} SCIM requests refused for a bad token or password in"
                    f" the last minute (latest from {remote})",
                    count=len(self._times),
                    remote=remote,
                    key="auth_failures",
                )
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
