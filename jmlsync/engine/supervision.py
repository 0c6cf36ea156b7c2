"""Supervision of the workers: what they report while the store refuses them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from jmlsync.domain.errors import StoreUnavailable
from jmlsync.ports import Clock, OwnerLock

__all__ = ["Outage", "OwnerLock", "PipelineHealth", "store_outage"]

log = logging.getLogger("jmlsync.worker")


@dataclass(frozen=True)
class PipelineHealth:
    """Whether the workers reach the store: the last error and since when, or None, None."""

    error: str | None
    since: datetime | None


class Outage:
    """One stretch of failing store calls, shared by every worker and the heartbeat: logged
    when it starts and when it ends, never per attempt."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.since: datetime | None = None
        self.error: str | None = None
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.error = str(exc) or type(exc).__name__
        if self.since is not None:
            return
        self.since = self.clock()
        fields = {"fields": {"event": "pipeline_outage"}}
        if isinstance(exc, StoreUnavailable):
            log.error("workers cannot use the store: %s; retrying with backoff", exc, extra=fields)
        else:
            log.error("workers hit an unexpected error; retrying with backoff", exc_info=exc)

    def recovered(self) -> None:
        if self.since is None:
            return
        seconds = (self.clock() - self.since).total_seconds()
        log.warning(
            "workers use the store again after %.1fs (%d failed attempt(s))",
            seconds,
            self.failures,
            extra={"fields": {"event": "pipeline_recovered", "outage_seconds": round(seconds, 1)}},
        )
        self.since, self.error, self.failures = None, None, 0


def store_outage(exc: BaseException) -> StoreUnavailable | None:
    """The StoreUnavailable behind ``exc``, also from inside a task group's exception group
    (operations applied in parallel), else None."""
    if isinstance(exc, StoreUnavailable):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = store_outage(inner)
            if found is not None:
                return found
    return None
