"""The ports of jmlsync: the contracts every adapter keeps. Their docstrings are the spec.

A concrete class may keep several ports (the SQL store is the Directory, the PlanningReads and
the GrantLedger at once); each consumer names the narrowest port it uses.

One module per family of ports; every name is importable from here.
"""

from __future__ import annotations

from jmlsync.ports.access import AccessStore
from jmlsync.ports.alerts import AlertSink, StagedAlert, StagingAlertSink
from jmlsync.ports.assurance import (
    AssuranceOverview,
    AssuranceStore,
    DriftRecords,
    LeaverVerification,
    MoverCounts,
    MoverRecords,
    RunLog,
    SlaReads,
)
from jmlsync.ports.audit import AuditHistory, AuditLog, AuditTrail
from jmlsync.ports.clock import Clock
from jmlsync.ports.directory import (
    Directory,
    Effect,
    GrantLedger,
    PlanningReads,
    PlanningStore,
    Query,
    Store,
)
from jmlsync.ports.metrics import Counter, EngineMetrics, Gauge, LabelledCounter, LabelledGauge
from jmlsync.ports.queue import LeaverRecords, PipelineQueue, Queue
from jmlsync.ports.reviews import ReviewAssignments, ReviewHolds, ReviewStore
from jmlsync.ports.sessions import SessionStore
from jmlsync.ports.state import (
    HeldLock,
    LeaderLease,
    OwnerLock,
    ReplicaLocks,
    ServiceState,
    WriteHealth,
)
from jmlsync.ports.targets import (
    JOB_READS,
    LISTING_READ_RETRY,
    BatchStep,
    BatchTarget,
    ReadRetry,
    Target,
    UserReadTarget,
)

__all__ = [
    "JOB_READS",
    "LISTING_READ_RETRY",
    "AccessStore",
    "AlertSink",
    "AssuranceOverview",
    "AssuranceStore",
    "AuditHistory",
    "AuditLog",
    "AuditTrail",
    "BatchStep",
    "BatchTarget",
    "Clock",
    "Counter",
    "Directory",
    "DriftRecords",
    "Effect",
    "EngineMetrics",
    "Gauge",
    "GrantLedger",
    "HeldLock",
    "LabelledCounter",
    "LabelledGauge",
    "LeaderLease",
    "LeaverRecords",
    "LeaverVerification",
    "MoverCounts",
    "MoverRecords",
    "OwnerLock",
    "PipelineQueue",
    "PlanningReads",
    "PlanningStore",
    "Query",
    "Queue",
    "ReadRetry",
    "ReplicaLocks",
    "ReviewAssignments",
    "ReviewHolds",
    "ReviewStore",
    "RunLog",
    "ServiceState",
    "SessionStore",
    "SlaReads",
    "StagedAlert",
    "StagingAlertSink",
    "Store",
    "Target",
    "UserReadTarget",
    "WriteHealth",
]
