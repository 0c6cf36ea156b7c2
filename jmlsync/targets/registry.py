"""The one place that knows the target kinds: it opens a configured target by its ``kind``."""

from __future__ import annotations

from typing import assert_never

from jmlsync.config import LedgerTargetSettings, TargetSettings
from jmlsync.ports import Target
from jmlsync.targets.ledger import LedgerTarget


async def open_target(name: str, settings: TargetSettings) -> Target:
    """Open the target ``name`` configured by ``settings``; the caller closes it."""
    match settings:
        case LedgerTargetSettings(kind="ledger"):
            return await LedgerTarget.open(name, settings.path)
        case _:
            # mypy fails here when a kind joins TargetSettings without a case above.
            assert_never(settings)
