"""Delivery of the alert outbox to the webhook: claim a due row, post it, mark it delivered.

Each row is posted with tenacity (exponential backoff with jitter, bounded attempts); when a
round of attempts fails, the row keeps its place and is due again later, with a longer wait
after each failed round, so an alert is never dropped. The webhook URL is a secret (Slack and
Teams put the credential in it): it is never logged, and errors are stored without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity import wait_exponential_jitter as backoff

from jmlsync.config import Settings
from jmlsync.store.outbox import AlertRow, SqlOutbox

log = logging.getLogger("jmlsync.alerts")

#: How long a deliverer sleeps at most between looks at the outbox (rows other replicas
#: wrote, retries coming due); rows this process writes wake it at once.
POLL_SECONDS = 5.0
#: Added to every lease beyond the post's own timeout, for the write that settles the row.
LEASE_MARGIN_SECONDS = 2.0
#: How often a command waiting for another deliverer's post looks at the outbox.
FLUSH_POLL_SECONDS = 0.2
#: The longest wait before a row that failed a round of attempts is tried again.
MAX_ROUND_WAIT_SECONDS = 3600.0


class _Stopped(Exception):
    """Raised between attempts once :meth:`Deliverer.stop` was called."""


class WebhookError(Exception):
    """The webhook answered with an error status (and maybe a ``Retry-After``, in seconds)."""

    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"status {status}")
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date, or junk: the computed backoff will do
        return None


@dataclass(frozen=True)
class DeliveryPolicy:
    """How one row is posted: ``attempts`` posts of at most ``timeout`` seconds each, waits
    growing from ``initial_wait`` to ``max_wait``. Tests pass zero waits instead of sleeping."""

    attempts: int = 5
    timeout: float = 10.0
    initial_wait: float = 0.5
    max_wait: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)

    def round_wait(self, failed_rounds: int) -> timedelta:
        """The wait before the next round, after ``failed_rounds`` rounds failed."""
        seconds = max(self.max_wait, 0.1) * 2 ** min(max(failed_rounds - 1, 0), 12)
        return timedelta(seconds=min(seconds, MAX_ROUND_WAIT_SECONDS))


def payload_of(row: AlertRow) -> dict[str, Any]:
    """The JSON body posted for a row; ``text`` makes Slack-compatible hooks show it, and
    ``alert_id`` lets a receiver drop the rare repeat (a crash after the post, before the
    row was marked delivered)."""
    return {
        "text": f"[jmlsync] {row.text}",
        "kind": row.kind,
        **row.fields,
        "alert_id": row.id,
        "created_at": row.created_at,
    }


def describe(exc: BaseException) -> str:
    """A failed post in words that never carry the URL (aiohttp errors may quote it)."""
    if isinstance(exc, WebhookError):
        return f"webhook answered {exc}"
    if isinstance(exc, TimeoutError):
        return "webhook timed out"
    return f"webhook unreachable ({type(exc).__name__})"


class Deliverer:
    """Posts due outbox rows to one webhook, as ``owner`` (leases carry it)."""

    def __init__(
        self,
        outbox: SqlOutbox,
        http: aiohttp.ClientSession,
        url: str,
        *,
        owner: str,
        clock: Callable[[], datetime],
        policy: DeliveryPolicy | None = None,
        gate: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.outbox = outbox
        self._http = http
        self._url = url
        self._owner = owner
        self._clock = clock
        self._policy = policy or DeliveryPolicy()
        self._gate = gate
        self._woken = asyncio.Event()
        self._failing = False
        self._webhook_down = False
        self._stopping = False

    def only_when(self, gate: Callable[[], Awaitable[bool]]) -> None:
        """Deliver in :meth:`run` only while ``gate`` says so (the scheduler's leadership)."""
        self._gate = gate

    def wake(self, _alert_id: int | None = None) -> None:
        """A row was written: look at the outbox now."""
        self._woken.set()

    def stop(self) -> None:
        """Make :meth:`run` return once the post in progress is settled. Cancelling it
        instead could land after the webhook took an alert and before the row was marked
        delivered: the next start would post that alert again."""
        self._stopping = True
        self._woken.set()

    @property
    def stop_grace(self) -> float:
        """How long a stop may wait for the post in progress (one attempt, and its mark)."""
        return self._policy.timeout + LEASE_MARGIN_SECONDS

    async def _post(self, payload: dict[str, Any]) -> None:
        timeout = aiohttp.ClientTimeout(total=self._policy.timeout)
        async with self._http.post(self._url, json=payload, timeout=timeout) as reply:
            if reply.status >= 300:
                raise WebhookError(reply.status, _retry_after(reply.headers.get("Retry-After")))

    async def deliver(self, row: AlertRow) -> bool:
        """Post one leased row through a round of attempts and settle it; True if delivered."""
        policy = self._policy
        tries = 0

        async def sleep(seconds: float) -> None:
            if self._stopping:
                raise _Stopped  # no next attempt: settle the row and return
            # The lease must outlast the wait and the next post, or another deliverer
            # would take the row meanwhile and post it too.
            lease = timedelta(seconds=seconds + policy.timeout + LEASE_MARGIN_SECONDS)
            await self.outbox.renew(row.id, self._owner, self._clock() + lease)
            await policy.sleep(seconds)

        computed = backoff(
            multiplier=policy.initial_wait, max=policy.max_wait, jitter=policy.initial_wait
        )

        def wait(state: RetryCallState) -> float:
            # A throttling webhook (Slack answers 429) says how long: honour it, capped.
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, WebhookError) and error.retry_after is not None:
                return min(error.retry_after, policy.max_wait)
            return float(computed(state))

        retrying = AsyncRetrying(
            retry=retry_if_exception_type((aiohttp.ClientError, TimeoutError, WebhookError)),
            stop=stop_after_attempt(policy.attempts),
            wait=wait,
            sleep=sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    tries += 1
                    await self._post(payload_of(row))
        except asyncio.CancelledError:
            # Stopped mid-post (shutdown, or a CLI's bounded wait): free the row at once.
            await self.outbox.failed(row.id, self._owner, "interrupted", tries, self._clock())
            raise
        except _Stopped:
            await self.outbox.failed(row.id, self._owner, "interrupted", tries, self._clock())
            return False
        except Exception as exc:
            rounds = (row.attempts + tries) // max(policy.attempts, 1)
            retry_at = self._clock() + policy.round_wait(rounds)
            await self.outbox.failed(row.id, self._owner, describe(exc), tries, retry_at)
            # The outage is logged once, and its end once; each row keeps its own last error.
            log.log(
                logging.DEBUG if self._webhook_down else logging.ERROR,
                "alert %d (%s) not delivered after %d attempt(s): %s; kept, next try at %s",
                row.id,
                row.kind,
                tries,
                describe(exc),
                retry_at.isoformat(timespec="seconds"),
            )
            self._webhook_down = True
            return False
        await self.outbox.delivered(row.id, self._owner, self._clock(), tries)
        if self._webhook_down:
            log.info("the alert webhook takes alerts again")
            self._webhook_down = False
        log.info("alert %d (%s) delivered", row.id, row.kind)
        return True

    async def deliver_due(self, only: Collection[int] | None = None) -> int:
        """Deliver due rows, oldest first, until none is due or one fails a round (the
        webhook is down: the rest wait for their turn). How many were delivered."""
        lease = timedelta(seconds=self._policy.timeout + LEASE_MARGIN_SECONDS)
        delivered = 0
        while not self._stopping:
            row = await self.outbox.claim(self._owner, self._clock(), lease, only=only)
            if row is None:
                return delivered
            if not await self.deliver(row):
                return delivered
            delivered += 1
        return delivered

    async def flush(self, ids: Collection[int], seconds: float) -> int:
        """Deliver these rows within ``seconds``; how many are still undelivered after."""
        if not ids:
            return 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.deliver_due(only=ids)
                # A row another deliverer (the running service) is posting: wait for it,
                # polling, as that process cannot tell this one when it is done.
                while await self.outbox.in_flight(ids, self._owner, self._clock()):
                    await asyncio.sleep(FLUSH_POLL_SECONDS)
                    await self.deliver_due(only=ids)
        states = await self.outbox.states(ids)
        return sum(1 for state in states.values() if state == "pending")

    async def run(self) -> None:
        """Deliver the outbox until stopped or cancelled (when ``gate`` allows: the
        scheduler leader)."""
        while not self._stopping:
            self._woken.clear()
            delay = POLL_SECONDS
            if self._gate is None or await self._gate():
                delay = await self._pass()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._woken.wait()

    async def _pass(self) -> float:
        """One look at the outbox; how long to wait before the next."""
        try:
            await self.deliver_due()
            due = await self.outbox.next_due()
        except Exception as exc:  # the store is unreachable: log it once, and keep trying
            if not self._failing:
                log.error("cannot deliver alerts: %s: %s", type(exc).__name__, exc)
                self._failing = True
            return POLL_SECONDS
        if self._failing:
            log.info("alert delivery resumed")
            self._failing = False
        if due is None:
            return POLL_SECONDS
        wait = (due - self._clock()).total_seconds()
        return min(max(wait, 0.05), POLL_SECONDS)


#: How long a CLI command waits, before it exits, for the webhook to take its alerts.
CLI_ALERT_SECONDS = 10.0


def webhook_url(settings: Settings) -> str | None:
    """The alert webhook's URL, when configured (from the file, which wins over the inline
    one). A secret: never logged."""
    alerts = settings.alerts
    url = alerts.webhook_url.get_secret_value() if alerts.webhook_url else None
    if alerts.webhook_url_file is not None:
        url = alerts.webhook_url_file.read_text("utf-8").strip() or None
    return url or None


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    """How this configuration wants alerts posted ([alerts].timeout_seconds and
    retry_max_wait_seconds)."""
    alerts = settings.alerts
    return DeliveryPolicy(
        timeout=alerts.timeout_seconds,
        initial_wait=min(0.5, alerts.retry_max_wait_seconds),
        max_wait=alerts.retry_max_wait_seconds,
    )


async def deliver_before_exit(deliverer: Deliverer | None, ids: Collection[int]) -> None:
    """What a command does with the alerts it raised: deliver them within
    :data:`CLI_ALERT_SECONDS` (when it can), and say on stderr that the rest is queued for
    the service."""
    if not ids:
        return
    try:
        left = len(ids) if deliverer is None else await deliverer.flush(ids, CLI_ALERT_SECONDS)
    except Exception as exc:  # the store went away: the rows are written, the service has them
        log.warning("cannot deliver alerts before exiting: %s", type(exc).__name__)
        left = len(ids)
    if left:
        print(  # noqa: T201 - the command's one line on stderr, not a log
            f"jmlsync: {left} alert(s) not delivered yet: queued for the service to deliver",
            file=sys.stderr,
        )
