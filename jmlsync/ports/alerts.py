"""Where alerts go, and the alerts written in the transaction of the event that raises them."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class AlertSink(Protocol):
    """Where alerts go. Sending never raises and never blocks the pipeline for long."""

    async def alert(self, kind: str, text: str, **fields: Any) -> None: ...


class StagedAlert(Protocol):
    """An alert written in the transaction of the event that raises it, so a crash between
    the event and its alert cannot keep one without the other."""

    async def write(self, conn: Any) -> None:
        """Add the alert's rows with ``conn``, inside the caller's transaction body (a retried
        body calls it again: it starts over)."""
        ...

    async def send(self) -> None:
        """The whole alert now, in a transaction of its own (the event was not written)."""
        ...

    async def after_commit(self) -> None:
        """The rest of the alert (log line, delivery wake-up) once the transaction committed."""
        ...


@runtime_checkable
class StagingAlertSink(AlertSink, Protocol):
    """A sink that can write an alert's rows in another transaction (the outbox's)."""

    def stage(self, kind: str, text: str, fields: dict[str, Any]) -> StagedAlert:
        """The alert, to write with an event's transaction and complete after its commit."""
        ...
