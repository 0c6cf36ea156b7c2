"""The metrics the engine moves, as narrow Protocols over the Prometheus types."""

from __future__ import annotations

from typing import Protocol


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class LabelledCounter(Protocol):
    def labels(self, *values: str) -> Counter: ...


class LabelledGauge(Protocol):
    def labels(self, *values: str) -> Gauge: ...


class EngineMetrics(Protocol):
    """The metrics the engine moves (names and labels are the operator interface)."""

    @property
    def operations(self) -> LabelledCounter:
        """Target operations, by target, action and result."""
        ...

    @property
    def retries(self) -> LabelledCounter:
        """Retried target calls, by target."""
        ...

    @property
    def sla_breaches(self) -> Counter: ...

    @property
    def last_reconcile(self) -> Gauge: ...

    @property
    def last_reconcile_ok(self) -> Gauge: ...

    @property
    def drift_findings(self) -> LabelledGauge:
        """Open drift findings, by kind."""
        ...
