"""HTTP endpoints bound beyond loopback need a bearer token; /healthz stays open.

The orchestrator (``/status``, ``/events``, the dashboard) and the metrics
collector (``/metrics``) run on a real nats-server, bound to every interface with a
token file. Without a token file such a binding is refused at config load, with one
line naming the field; a missing or empty token file is named too.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import anyio
import pytest

from services.orchestrator.config import OrchestratorConfig
from services.orchestrator.service import OrchestratorService
from services.status_metrics_collector.config import StatusMetricsCollectorConfig
from services.status_metrics_collector.service import StatusMetricsCollectorService
from shared.config import convert_config
from shared.errors import ConfigError
from shared.http_auth import is_loopback
from shared.testing.fixtures import ServiceFactory

pytestmark = pytest.mark.anyio

TOKEN = "t0ken-for-tests"


def get(port: int, path: str, token: str | None = None) -> int:
    """The status code of GET ``path`` on loopback (with ``token`` as a bearer)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "http.token"
    path.write_text(TOKEN + "\n")
    return path


def test_loopback_is_told_apart() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    assert not is_loopback("dashboard.example.com")


@pytest.mark.parametrize(
    ("cls", "values", "field"),
    [
        (OrchestratorConfig, {"http_host": "0.0.0.0"}, "http_token_file"),
        (StatusMetricsCollectorConfig, {"prometheus_host": "0.0.0.0"}, "prometheus_token_file"),
    ],
)
def test_beyond_loopback_without_a_token_is_refused(
    cls: type[OrchestratorConfig] | type[StatusMetricsCollectorConfig],
    values: dict[str, str],
    field: str,
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=f"beyond loopback: set {field}") as info:
        convert_config(cls, values)
    assert "\n" not in str(info.value)
    missing = tmp_path / "no.token"
    with pytest.raises(ConfigError, match=f"{field} {missing}: No such file"):
        convert_config(cls, {**values, field: str(missing)})
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="the file is empty"):
        convert_config(cls, {**values, field: str(empty)})
    # Loopback needs no token.
    convert_config(cls, {})


async def test_orchestrator_asks_for_the_token(
    start_service: ServiceFactory, token_file: Path
) -> None:
    orch = await start_service(
        OrchestratorService, http_host="0.0.0.0", http_port=0, http_token_file=str(token_file)
    )
    assert orch.http is not None and orch.http.port
    port = orch.http.port

    def codes() -> list[int]:
        return [
            get(port, "/healthz"),
            get(port, "/status"),
            get(port, "/status", "wrong"),
            get(port, "/status", TOKEN),
            get(port, "/"),
            get(port, f"/?access_token={TOKEN}"),
            get(port, "/dashboard.js"),
        ]

    assert await anyio.to_thread.run_sync(codes) == [200, 401, 401, 200, 401, 200, 200]
    assert orch.http.stats["unauthorized"] == 3


async def test_prometheus_asks_for_the_token(
    start_service: ServiceFactory, token_file: Path
) -> None:
    svc = await start_service(
        StatusMetricsCollectorService,
        prometheus_host="0.0.0.0",
        prometheus_port=0,
        prometheus_token_file=str(token_file),
    )
    port = svc.prometheus_port
    assert port

    def codes() -> list[int]:
        return [get(port, "/healthz"), get(port, "/metrics"), get(port, "/metrics", TOKEN)]

    assert await anyio.to_thread.run_sync(codes) == [200, 401, 200]
    assert svc.prometheus.details()["unauthorized"] == 1
