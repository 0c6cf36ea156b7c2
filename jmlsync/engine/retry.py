"""The one retry policy for target calls: tenacity, transient errors only, bounded, Retry-After."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from jmlsync.domain.errors import TransientTargetError

log = logging.getLogger("jmlsync.retry")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for TransientTargetError, bounded in attempts and time.

    A ``retry_after`` the target sent wins over the computed wait (capped by ``max_wait``).
    Other errors, and the last transient one, are re-raised unchanged. Tests pass
    ``initial_wait=0`` and ``max_wait=0`` instead of sleeping.
    """

    attempts: int = 5
    total_seconds: float = 60.0
    initial_wait: float = 0.2
    max_wait: float = 10.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientTargetError) and error.retry_after is not None:
            return min(error.retry_after, self.max_wait)
        backoff = wait_exponential_jitter(
            multiplier=self.initial_wait or 1, max=self.max_wait, jitter=self.initial_wait
        )
        return min(backoff(state), self.max_wait) if self.initial_wait else 0.0

    async def call(
        self,
        what: str,
        action: Callable[[], Awaitable[T]],
        on_retry: Callable[[], None] | None = None,
    ) -> T:
        """Run ``action`` until it succeeds, fails permanently, or the bounds are reached.

        ``on_retry`` is called before each retry (to count them).
        """

        def before_sleep(state: RetryCallState) -> None:
            log.debug("%s: attempt %d failed, retrying", what, state.attempt_number)
            if on_retry is not None:
                on_retry()

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientTargetError),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.total_seconds),
            wait=self._wait,
            reraise=True,
            sleep=self.sleep,
            before_sleep=before_sleep,
        )
        async for attempt in retrying:
            with attempt:
                return await action()
        raise AssertionError("unreachable: tenacity either returns or re-raises")
