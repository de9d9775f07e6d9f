"""What the training and evaluation steps share: config, store, peers, blobs, emit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.js.kv import KeyValue

from services.training_coordinator.config import TrainingCoordinatorConfig
from services.training_coordinator.peers import Peers
from services.training_coordinator.store import ModelStore
from shared.blobs import BlobStore

#: ``emit(data, msg_id="")``: True once acknowledged (``Service.emit``).
Emit = Callable[..., Awaitable[bool]]


@dataclass
class Context:
    """The coordinator's collaborators; ``counts`` shows in health details."""

    config: TrainingCoordinatorConfig
    store: ModelStore
    peers: Peers
    blobs: BlobStore
    manifests: KeyValue
    emit: Emit
    instance: str
    alive_nodes: Callable[[], int]
    counts: Counter[str] = field(default_factory=Counter)
