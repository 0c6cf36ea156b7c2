"""A reconciliation's reads: the directory and every target side by side, and a store that
fails mid-read raised as itself (the CLI's one line), not as a task group's exception group."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jmlsync.clock import now_utc
from jmlsync.config import load_settings
from jmlsync.domain.access import Grant, Principal, UserState
from jmlsync.domain.errors import StoreUnavailable
from jmlsync.engine.apply import Applier
from jmlsync.engine.reconcile import Reconciler, Scope
from jmlsync.policy_config import rules_from_settings
from jmlsync.runtime import open_runtime
from jmlsync.store.directory import SqlStore
from tests.conftest import write_config
from tests.service.test_pipeline import PIPELINE

pytestmark = pytest.mark.timeout(30)


class GatedDirectory:
    """The store, whose user stream waits until every target's listing has begun (so only
    reads side by side can finish), or fails with ``fail``."""

    def __init__(self, store: SqlStore, gate: asyncio.Event, fail: BaseException | None) -> None:
        self._store, self._gate, self._fail = store, gate, fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def policy_users(self, *args: Any, **kwargs: Any) -> AsyncIterator[UserState]:
        if self._fail is not None:
            raise self._fail
        await self._gate.wait()
        async for user in self._store.policy_users(*args, **kwargs):
            yield user


class GatedTarget:
    """A target whose listing opens the gate, then waits for the directory's first read."""

    def __init__(self, inner: Any, gate: asyncio.Event) -> None:
        self._inner, self._gate = inner, gate
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def list_grants(self) -> AsyncIterator[Grant]:
        self._gate.set()
        async for grant in self._inner.list_grants():
            yield grant

    async def list_principals(self) -> AsyncIterator[Principal]:
        async for principal in self._inner.list_principals():
            yield principal


@pytest.mark.parametrize("fail", [None, StoreUnavailable("SQLite: disk I/O error")])
async def test_directory_and_targets_are_read_side_by_side(
    tmp_path: Path, fail: BaseException | None
) -> None:
    settings = load_settings(write_config(tmp_path, extra=PIPELINE))
    async with open_runtime(settings) as runtime:
        gate = asyncio.Event()
        targets = {n: GatedTarget(t, gate) for n, t in runtime.targets.items()}
        applier = Applier(runtime.store, runtime.queue, targets, clock=now_utc)  # type: ignore[arg-type]
        directory = GatedDirectory(runtime.store, gate, fail)
        reconciler = Reconciler(
            directory,  # type: ignore[arg-type]
            targets,  # type: ignore[arg-type]
            rules_from_settings(settings),
            applier,
        )
        if fail is None:
            # Read one after the other, the directory would wait for a listing never begun.
            snapshot = await asyncio.wait_for(reconciler.snapshot(Scope()), 10)
            assert snapshot.counts["users"] == 0
        else:
            with pytest.raises(StoreUnavailable, match="disk I/O error"):
                await reconciler.snapshot(Scope())
