"""The composition root closes what it opened on every path, a failed start included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jmlsync import runtime, service
from jmlsync.config import ConfigError, load_settings
from jmlsync.store.directory import SqlStore
from tests.conftest import write_config

pytestmark = pytest.mark.timeout(30)

TWO_TARGETS = """
[targets.first]
kind = "ledger"
path = "first.db"

[targets.second]
kind = "ledger"
path = "second.db"
"""


async def test_a_target_that_cannot_open_closes_the_store_and_the_targets_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(write_config(tmp_path, extra=TWO_TARGETS), environ={})
    closed: list[str] = []
    real_open = runtime.open_target

    async def open_target(name: str, target_settings: Any, *, http: Any = None) -> Any:
        if name == "second":
            raise ConfigError("target 'second': cannot open (injected)")
        target = await real_open(name, target_settings, http=http)
        real_close = target.close

        async def close() -> None:
            closed.append(name)
            await real_close()

        target.close = close  # type: ignore[method-assign]
        return target

    real_store_close = SqlStore.close

    async def store_close(self: SqlStore) -> None:
        closed.append("store")
        await real_store_close(self)

    monkeypatch.setattr(runtime, "open_target", open_target)
    monkeypatch.setattr(SqlStore, "close", store_close)
    with pytest.raises(ConfigError, match="injected"):
        async with runtime.open_runtime(settings):
            pytest.fail("the runtime must not open")
    assert closed == ["first", "store"]


async def test_an_app_that_fails_to_assemble_closes_its_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(write_config(tmp_path), environ={})
    closed: list[str] = []
    real_store_close = SqlStore.close

    async def store_close(self: SqlStore) -> None:
        closed.append("store")
        await real_store_close(self)

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("cannot assemble (injected)")

    monkeypatch.setattr(SqlStore, "close", store_close)
    monkeypatch.setattr(service, "build_scim_app", broken)
    with pytest.raises(RuntimeError, match="injected"):
        await service.build_app(settings)
    assert closed == ["store"]
