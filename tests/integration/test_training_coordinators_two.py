"""Two training coordinators at once on one cluster: exactly one promotion per decision.

Both see the same new games at the same moment and race for every step (the
training, the evaluation, the promotion's champion CAS); the cluster around them is
the one of test_training_coordinator.py, imported from that module (pytest puts a
test's directory on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client
from test_training_coordinator import (
    COORDINATOR,
    GAME,
    Cluster,
    PlannerStandIn,
    _idle,
    started_cluster,
)

from services.training_coordinator.service import TrainingCoordinatorService
from shared.testing.fixtures import ServiceFactory
from shared.testing.helpers import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
async def cluster(
    start_service: ServiceFactory, nc: Client, prefix: str, tmp_path: Path
) -> Cluster:
    """The cluster of test_training_coordinator.py."""
    return await started_cluster(start_service, nc, prefix, tmp_path)


async def test_two_coordinators_at_once_train_evaluate_and_promote_exactly_once(
    cluster: Cluster, start_service: ServiceFactory
) -> None:
    games = await cluster.blobs.put_bytes("games.npz", b"selfplay games " * 64)
    (cluster.control / "model").write_bytes(b"a better model")
    cluster.outcome(38, 1, 1)
    async with PlannerStandIn(cluster, games).serving():
        both = [await start_service(TrainingCoordinatorService, **COORDINATOR) for _ in "ab"]
        # Both running first: they see the 500 new games at once and race for every step.
        await cluster.games(500)
        promoted = await cluster.one("MODEL_PROMOTED")
        state = await eventually(lambda: _idle(cluster), what="idle after the promotion")

        def both_know(svc: TrainingCoordinatorService) -> bool:
            games = svc.health_check().details["games"][GAME]
            return bool(games["champion"] == promoted["model_id"])

        await eventually(lambda: all(both_know(svc) for svc in both), what="both saw it")
    assert (state.generation, state.promotions) == (1, 1)
    # Exactly one of the two made the promotion's CAS.
    made = [svc.health_check().details["counts"].get("promotions", 0) for svc in both]
    assert sorted(made) == [0, 1]
    for kind in ("TRAINING_STARTED", "TRAINING_COMPLETED", "EVALUATION_COMPLETED"):
        assert len(await cluster.events(kind)) == 1, kind
    assert len(await cluster.events("MODEL_PROMOTED")) == 1
    assert len(await cluster.jobs("train")) == 1 and len(await cluster.jobs("evaluate")) == 1
    found = await cluster.champion()
    assert found is not None and (found[0].model_id, found[0].generation) == (
        promoted["model_id"],
        1,
    )
