"""Typed event payloads: one Struct per event type, so no event goes out untyped.

An event's type name comes from its data class (``TYPE``), which makes it impossible
to emit a name outside the catalogue or two payload shapes for one event: the two
ways the original system lost events. ``decode_data`` turns an Event's ``data`` back
into its Struct for consumers.

The payloads live in one module per domain: ``lifecycle`` (every service, the
orchestrator, loops), ``jobs`` (jobs, nodes, state) and ``selfplay`` (the training loop).
"""

from shared.events.base import REGISTRY, EventData, build_event, decode_data
from shared.events.jobs import (
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobLogsStored,
    JobProgress,
    JobRetried,
    JobStarted,
    JobSubmitted,
    NodeRecovered,
    NodeUnhealthy,
    StateValidated,
)
from shared.events.lifecycle import (
    LoopCompleted,
    LoopFailed,
    LoopStarted,
    MetricsCollected,
    ServiceDegraded,
    ServiceGaveUp,
    ServiceLost,
    ServiceRecovered,
    ServiceRegistered,
    ServiceRestarted,
    ServiceStarted,
    ServiceStopped,
    ServiceSuspect,
)
from shared.events.selfplay import (
    DataAvailable,
    DataSyncCompleted,
    DataSyncFailed,
    DataSyncStarted,
    EvaluationCompleted,
    EvaluationStarted,
    ModelPromoted,
    ModelRejected,
    SelfplayAllocationUpdated,
    SelfplayTargetUpdated,
    TrainingCompleted,
    TrainingFailed,
    TrainingStarted,
)

__all__ = [
    "REGISTRY",
    "DataAvailable",
    "DataSyncCompleted",
    "DataSyncFailed",
    "DataSyncStarted",
    "EvaluationCompleted",
    "EvaluationStarted",
    "EventData",
    "JobCancelled",
    "JobCompleted",
    "JobFailed",
    "JobLogsStored",
    "JobProgress",
    "JobRetried",
    "JobStarted",
    "JobSubmitted",
    "LoopCompleted",
    "LoopFailed",
    "LoopStarted",
    "MetricsCollected",
    "ModelPromoted",
    "ModelRejected",
    "NodeRecovered",
    "NodeUnhealthy",
    "SelfplayAllocationUpdated",
    "SelfplayTargetUpdated",
    "ServiceDegraded",
    "ServiceGaveUp",
    "ServiceLost",
    "ServiceRecovered",
    "ServiceRegistered",
    "ServiceRestarted",
    "ServiceStarted",
    "ServiceStopped",
    "ServiceSuspect",
    "StateValidated",
    "TrainingCompleted",
    "TrainingFailed",
    "TrainingStarted",
    "build_event",
    "decode_data",
]
