"""The retry policy: transient errors are retried with backoff, permanent ones are not."""

from __future__ import annotations

import pytest

from jmlsync.domain.errors import PermanentTargetError, TransientTargetError
from jmlsync.engine.retry import RetryPolicy


class Recorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def failing(times: int, error: Exception) -> tuple[list[int], object]:
    calls: list[int] = []

    async def action() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "done"

    return calls, action


async def test_transient_errors_are_retried_with_growing_waits() -> None:
    sleep = Recorder()
    policy = RetryPolicy(attempts=5, initial_wait=1.0, max_wait=30.0, sleep=sleep)
    calls, action = failing(3, TransientTargetError("throttled"))
    assert await policy.call("grant", action) == "done"  # type: ignore[arg-type]
    assert len(calls) == 4
    assert len(sleep.waits) == 3
    assert all(1.0 <= w <= 30.0 for w in sleep.waits)
    assert sleep.waits[2] > sleep.waits[0]


async def test_permanent_errors_are_not_retried() -> None:
    sleep = Recorder()
    policy = RetryPolicy(sleep=sleep)
    calls, action = failing(1, PermanentTargetError("denied"))
    with pytest.raises(PermanentTargetError):
        await policy.call("grant", action)  # type: ignore[arg-type]
    assert len(calls) == 1
    assert sleep.waits == []


async def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    policy = RetryPolicy(attempts=3, sleep=Recorder())
    calls, action = failing(10, TransientTargetError("503"))
    with pytest.raises(TransientTargetError, match="503"):
        await policy.call("grant", action)  # type: ignore[arg-type]
    assert len(calls) == 3


async def test_retry_after_is_honoured_and_capped() -> None:
    sleep = Recorder()
    policy = RetryPolicy(attempts=4, initial_wait=0.1, max_wait=20.0, sleep=sleep)
    _, action = failing(1, TransientTargetError("slow down", retry_after=7.0))
    await policy.call("grant", action)  # type: ignore[arg-type]
    assert sleep.waits == [7.0]
    sleep.waits.clear()
    _, action = failing(1, TransientTargetError("slow down", retry_after=3600.0))
    await policy.call("grant", action)  # type: ignore[arg-type]
    assert sleep.waits == [20.0]


async def test_total_time_is_bounded() -> None:
    policy = RetryPolicy(attempts=100, total_seconds=0.0, sleep=Recorder())
    calls, action = failing(10, TransientTargetError("timeout"))
    with pytest.raises(TransientTargetError):
        await policy.call("grant", action)  # type: ignore[arg-type]
    assert len(calls) == 1
