"""Fakes, named as such: only where a real part cannot produce the behaviour under test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError, TransientTargetError
from jmlsync.targets.ledger import LedgerTarget


class FlakyLedgerFake:
    """A real ledger behind a fault injector: the next ``fail_next`` calls to the methods named
    in ``failing`` raise (transient with ``retry_after``, or permanent); with ``hang`` set,
    ``grant`` waits for that event (a target that stopped answering)."""

    def __init__(self, ledger: LedgerTarget) -> None:
        self.ledger = ledger
        self.name = ledger.name
        self.fail_next = 0
        self.failing: set[str] = {"grant", "revoke"}
        self.permanent = False
        self.retry_after: float | None = None
        self.calls: dict[str, int] = {}
        self.hang: asyncio.Event | None = None
        self.entered = asyncio.Event()

    def _maybe_fail(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if method in self.failing and self.fail_next > 0:
            self.fail_next -= 1
            if self.permanent:
                raise PermanentTargetError(f"{method} denied (injected)")
            raise TransientTargetError(
                f"{method} throttled (injected)", retry_after=self.retry_after
            )

    async def list_grants(self) -> AsyncIterator[Grant]:
        # Fails half-way through (after the first grant), as a throttled page would: a
        # retry must start the listing again.
        listed = 0
        async for grant in self.ledger.list_grants():
            yield grant
            listed += 1
            if listed == 1:
                self._maybe_fail("list_grants")
        if listed == 0:
            self._maybe_fail("list_grants")

    def list_principals(self) -> AsyncIterator[Principal]:
        return self.ledger.list_principals()

    async def grants_of(self, user: str) -> frozenset[str]:
        self._maybe_fail("grants_of")
        return await self.ledger.grants_of(user)

    async def principal(self, user: str) -> Principal | None:
        return await self.ledger.principal(user)

    async def ensure_principal(self, spec: PrincipalSpec) -> None:
        await self.ledger.ensure_principal(spec)

    async def grant(self, user: str, role: str) -> None:
        self._maybe_fail("grant")
        self.entered.set()
        if self.hang is not None:
            await self.hang.wait()
        await self.ledger.grant(user, role)

    async def revoke(self, user: str, role: str) -> None:
        self._maybe_fail("revoke")
        await self.ledger.revoke(user, role)

    async def disable_principal(self, user: str) -> None:
        self._maybe_fail("disable_principal")
        await self.ledger.disable_principal(user)

    async def ping(self) -> None:
        self._maybe_fail("ping")
        await self.ledger.ping()

    async def close(self) -> None:
        await self.ledger.close()


class RecordingAlerts:
    """An alert sink that keeps what it is sent, for assertions."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    async def alert(self, kind: str, text: str, **fields: Any) -> None:
        self.sent.append((kind, text, fields))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.sent]
