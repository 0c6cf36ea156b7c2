"""Prometheus metrics of one process, on a registry of its own (served at /metrics)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from jmlsync import __version__

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: The kinds of drift a full reconciliation finds (the ``kind`` label of drift findings).
DRIFT_KINDS = ("missing", "unmanaged")
CLEAR_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """Every metric jmlsync exports; one instance per running service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.scim_requests = Counter(
            "jmlsync_scim_requests",
            "SCIM requests answered, by resource, method and status",
            ["resource", "method", "status"],
            registry=r,
        )
        self.scim_latency = Histogram(
            "jmlsync_scim_request_duration_seconds",
            "Time to answer a SCIM request",
            ["resource", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ignored_attributes = Counter(
            "jmlsync_scim_ignored_attributes",
            "Undeclared attributes a SCIM write ignored, by resource and attribute"
            " (past 100 distinct names, the rest count as 'other')",
            ["resource", "attribute"],
            registry=r,
        )
        self.skipped_members = Counter(
            "jmlsync_scim_skipped_members",
            "Unknown member ids a SCIM write skipped, by resource",
            ["resource"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "jmlsync_queue_depth", "Queued jobs not yet done (dead letters excluded)", registry=r
        )
        self.queue_oldest_age = Gauge(
            "jmlsync_queue_oldest_age_seconds",
            "Age of the oldest pending job (0 when the queue is empty)",
            registry=r,
        )
        self.dead_letters = Gauge(
            "jmlsync_dead_letters", "Jobs dead-lettered and waiting for an operator", registry=r
        )
        self.alerts_undelivered = Gauge(
            "jmlsync_alerts_undelivered",
            "Alerts in the outbox not yet delivered to the webhook",
            registry=r,
        )
        self.alerts_oldest_age = Gauge(
            "jmlsync_alerts_oldest_undelivered_age_seconds",
            "Age of the oldest undelivered alert (0 when every alert is delivered)",
            registry=r,
        )
        self.operations = Counter(
            "jmlsync_operations",
            "Operations applied to targets, by target, action and outcome",
            ["target", "action", "outcome"],
            registry=r,
        )
        self.target_up = Gauge(
            "jmlsync_target_up",
            "1 when the target answered its last ping (each /readyz and /metrics request),"
            " 0 when it failed or gave no answer in time",
            ["target"],
            registry=r,
        )
        self.retries = Counter(
            "jmlsync_target_call_retries",
            "Target calls retried after a transient error",
            ["target"],
            registry=r,
        )
        self.time_to_clear = Histogram(
            "jmlsync_leaver_time_to_clear_seconds",
            "From a leaver event to every grant revoked and the principal disabled",
            buckets=CLEAR_BUCKETS,
            registry=r,
        )
        self.sla_breaches = Counter(
            "jmlsync_sla_breaches", "Leavers not verified within the SLA", registry=r
        )
        self.drift_findings = Gauge(
            "jmlsync_drift_findings", "Open drift findings, by kind", ["kind"], registry=r
        )
        # Both kinds from the start, at 0: a dashboard or alert sees the series before the
        # first full reconciliation instead of no data.
        for kind in DRIFT_KINDS:
            self.drift_findings.labels(kind)
        self.last_reconcile = Gauge(
            "jmlsync_last_full_reconcile_timestamp_seconds",
            "When the last full reconciliation finished (Unix time)",
            registry=r,
        )
        # jmlsync_build_info{version="..."} 1: which release each instance runs.
        self.build_info = Info("jmlsync_build", "The jmlsync release this process runs", registry=r)
        self.build_info.info({"version": __version__})
        self.last_reconcile_ok = Gauge(
            "jmlsync_last_full_reconcile_success",
            "1 when the last full reconciliation succeeded, 0 otherwise",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
