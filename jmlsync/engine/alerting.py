"""Alerts written with the event that raises them, over any :class:`~jmlsync.ports.AlertSink`."""

from __future__ import annotations

from typing import Any

from jmlsync.ports import AlertSink, StagedAlert, StagingAlertSink


class _AfterCommit:
    """The staged alert of a sink without rows of its own (the log, a test's recorder): it
    is sent once the event's transaction committed."""

    def __init__(self, sink: AlertSink, kind: str, text: str, fields: dict[str, Any]) -> None:
        self._sink, self._kind, self._text, self._fields = sink, kind, text, fields

    async def write(self, conn: Any) -> None:
        return None

    async def send(self) -> None:
        await self._sink.alert(self._kind, self._text, **self._fields)

    async def after_commit(self) -> None:
        await self._sink.alert(self._kind, self._text, **self._fields)


def stage_alert(sink: AlertSink, kind: str, text: str, **fields: Any) -> StagedAlert:
    """The alert to write with an event's transaction (``write``) and complete after it
    committed (``after_commit``); ``send`` instead when the event was not written."""
    if isinstance(sink, StagingAlertSink):
        return sink.stage(kind, text, fields)
    return _AfterCommit(sink, kind, text, fields)
