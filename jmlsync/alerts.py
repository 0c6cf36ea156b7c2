"""Alerts: what an operator must hear about, in the log and, when configured, on a webhook.

Kinds: ``privileged_grant``, ``unmanaged_drift``, ``sla_breach``, ``guard_tripped``,
``dead_letter``, ``protected_user``, ``auth_failures``, ``leavers_paused``. Alerts with the same
kind and key are sent once per dedupe window. Sending never blocks the caller: webhook posts
go through a bounded in-memory queue drained by one task, retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Protocol

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

log = logging.getLogger("jmlsync.alerts")


class AlertSink(Protocol):
    """Where alerts go. Sending never raises and never blocks the pipeline for long."""

    async def alert(self, kind: str, text: str, **fields: Any) -> None: ...


class LogAlerts:
    """Alerts as ERROR log lines: always on, whatever else is configured."""

    async def alert(self, kind: str, text: str, **fields: Any) -> None:
        log.error("ALERT %s: %s", kind, text, extra={"fields": {"alert": kind, **fields}})


class WebhookError(Exception):
    """The webhook answered with an error status."""


class WebhookAlerts:
    """Alerts posted as JSON to a webhook; ``text`` makes Slack-compatible hooks show them.

    The URL is a secret (Slack and Teams put the credential in it): it is never logged.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        *,
        dedupe_seconds: float = 3600.0,
        attempts: int = 5,
        max_wait: float = 30.0,
        queue_size: int = 1000,
    ) -> None:
        self._http = http
        self._url = url
        self._dedupe_seconds = dedupe_seconds
        self._attempts = attempts
        self._max_wait = max_wait
        self._sent: dict[tuple[str, str], float] = {}
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_size)
        self._sender: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task that posts queued alerts."""
        if self._sender is None:
            self._sender = asyncio.create_task(self._drain(), name="jmlsync-alert-webhook")

    async def close(self) -> None:
        """Stop sending; alerts still queued are dropped (they are in the log already)."""
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            self._sender = None

    def _duplicate(self, kind: str, key: str) -> bool:
        now = time.monotonic()
        last = self._sent.get((kind, key))
        if last is not None and now - last < self._dedupe_seconds:
            return True
        self._sent[(kind, key)] = now
        return False

    async def alert(self, kind: str, text: str, **fields: Any) -> None:
        key = str(fields.get("key") or fields.get("user") or "")
        if self._duplicate(kind, key):
            return
        payload = {"text": f"[jmlsync] {text}", "kind": kind, **fields}
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            log.error("alert webhook queue is full; dropped a %s alert", kind)

    async def _drain(self) -> None:
        while True:
            payload = await self._queue.get()
            try:
                await self._post(payload)
            except Exception as exc:
                log.error("alert webhook failed after retries: %s", type(exc).__name__)

    async def _post(self, payload: dict[str, Any]) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((aiohttp.ClientError, TimeoutError, WebhookError)),
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.5, max=self._max_wait),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                async with self._http.post(self._url, json=payload) as reply:
                    if reply.status >= 300:
                        raise WebhookError(f"status {reply.status}")


class Alerts:
    """Every configured sink: the log always, the webhook when configured."""

    def __init__(self, *sinks: AlertSink) -> None:
        self._sinks = sinks or (LogAlerts(),)

    async def alert(self, kind: str, text: str, **fields: Any) -> None:
        for sink in self._sinks:
            try:
                await sink.alert(kind, text, **fields)
            except Exception:
                log.exception("an alert sink failed")


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
                    f"{len(self._times)} SCIM requests refused for a bad token in the last"
                    f" minute (latest from {remote})",
                    count=len(self._times),
                    remote=remote,
                    key="auth_failures",
                )
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
