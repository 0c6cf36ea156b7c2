"""Whether the store takes writes: an outage's first refusal and its end, logged once each.

Both backends feed one :class:`WriteHealth` from their write path, so a full disk or a lost
database logs one line when it starts and one when it ends, however many requests and workers
it turns away meanwhile; readiness reads it.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from jmlsync.domain.errors import StoreUnavailable

log = logging.getLogger("jmlsync.store")


class WriteHealth:
    """The write side of one store: refusing since when, and why."""

    def __init__(self) -> None:
        self.since: datetime | None = None
        self.error: str | None = None
        self.refusals = 0
        self._started = 0.0

    @property
    def refusing(self) -> bool:
        """True from a refused write until the next write that lands."""
        return self.since is not None

    def refused(self, error: StoreUnavailable) -> None:
        """Record a refused write; the first of an outage is logged."""
        self.refusals += 1
        self.error = str(error)
        if self.since is None:
            self.since = datetime.now(UTC)
            self._started = time.monotonic()
            log.error(
                "the store refuses writes: %s; SCIM writes answer 503 until it recovers",
                error,
                extra={"fields": {"event": "store_outage"}},
            )

    def accepted(self) -> None:
        """Record a write that landed; the first after an outage is logged."""
        if self.since is None:
            return
        seconds = time.monotonic() - self._started
        log.warning(
            "the store takes writes again after %.1fs (refused %d time(s))",
            seconds,
            self.refusals,
            extra={"fields": {"event": "store_recovered", "outage_seconds": round(seconds, 1)}},
        )
        self.since = None
        self.error = None
        self.refusals = 0
