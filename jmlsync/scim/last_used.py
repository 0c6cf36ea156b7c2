"""When each credential was last used, kept in the store at one-minute granularity.

Accepting a request only notes the time in memory (a dict assignment); a background task
writes the credentials used since its last pass once a minute, and once more when the service
stops, into ``service_state`` (``credential_used:FINGERPRINT``). So the hot path never writes,
and ``jmlsync token list`` reads the times from the store, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Protocol

from jmlsync.scim.auth import BearerAuth

log = logging.getLogger("jmlsync.auth")

KEY_PREFIX = "credential_used:"
FLUSH_SECONDS = 60.0


class StateStore(Protocol):
    """The part of the queue port that keeps small facts."""

    async def get_state(self, key: str) -> str | None: ...

    async def set_state(self, key: str, value: str | None) -> None: ...


def _minute(at: float) -> str:
    return datetime.fromtimestamp(at - at % 60, UTC).strftime("%Y-%m-%dT%H:%MZ")


class LastUsed:
    """Writes ``auth.used`` to the store, at most once a minute per credential."""

    def __init__(self, auth: BearerAuth, state: StateStore, *, every: float = FLUSH_SECONDS):
        self._auth = auth
        self._state = state
        self._every = every
        self._written: dict[str, str] = {}

    async def flush(self) -> None:
        """Write every credential whose minute of last use changed since the last flush."""
        for fingerprint, at in list(self._auth.used.items()):
            minute = _minute(at)
            if self._written.get(fingerprint) == minute:
                continue
            await self._state.set_state(KEY_PREFIX + fingerprint, minute)
            self._written[fingerprint] = minute

    async def run(self) -> None:
        """Flush every ``every`` seconds until cancelled; a store error waits for the next."""
        while True:
            await asyncio.sleep(self._every)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("cannot record when credentials were last used: %s", exc)


async def last_used(state: StateStore, fingerprint: str) -> str | None:
    """The minute a credential was last used, as recorded, or None."""
    return await state.get_state(KEY_PREFIX + fingerprint)
