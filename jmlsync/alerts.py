"""Alerts: things an operator must hear about (a dead letter, later SLA breaches and drift)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger("jmlsync.alerts")


class AlertSink(Protocol):
    """Where alerts go. Sending never raises and never blocks the pipeline for long."""

    async def alert(self, kind: str, text: str, **fields: Any) -> None: ...


class LogAlerts:
    """Alerts as ERROR log lines: always on, whatever else is configured."""

    async def alert(self, kind: str, text: str, **fields: Any) -> None:
        details = " ".join(f"{key}={value}" for key, value in sorted(fields.items()))
        log.error("ALERT %s: %s %s", kind, text, details)
