"""The cluster file (``ringmaster.toml``): which services ``ringmaster up`` runs.

::

    [cluster]
    prefix = "ringmaster"
    beacon_interval = 1.0
    data_dir = ".ringmaster"
    http_port = 8780
    replicas = 1               # 3 on a 3-server NATS cluster

    [services.loop_manager]
    restart = "permanent"      # permanent | transient | temporary
    instances = 1
    [services.loop_manager.config]   # that service's config fields
    collect_interval = 2.0

A service's ``config`` table is checked against its own config Struct before
anything starts, so a typo fails ``ringmaster up`` with the field's name.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from shared.errors import ConfigError
from shared.subjects import check_token

RestartPolicy = Literal["permanent", "transient", "temporary"]


class ClusterSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings every service of the cluster shares."""

    prefix: str = "ringmaster"
    beacon_interval: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    data_dir: str = ".ringmaster"
    nats_host: str = "127.0.0.1"
    nats_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 4222
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, msgspec.Meta(ge=-1, le=65535)] = 8780  # 0: any free, -1: none
    restart_intensity: Annotated[int, msgspec.Meta(ge=1)] = 5
    restart_period_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    max_restart_delay_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    # JetStream replicas of every stream, bucket and the object store: 3 on a
    # 3-server NATS cluster, 1 on one server (a server cannot hold more than one).
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1


class ServiceEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One service the supervisor runs."""

    restart: RestartPolicy = "permanent"
    instances: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    enabled: bool = True
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class ClusterFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The whole cluster file."""

    cluster: ClusterSettings = msgspec.field(default_factory=ClusterSettings)
    services: dict[str, ServiceEntry] = msgspec.field(default_factory=dict)


def load_cluster(path: Path) -> ClusterFile:
    """Read and check ``path``; ConfigError names the file and the field."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cluster file {path}: {exc}") from exc
    try:
        cluster = msgspec.convert(raw, ClusterFile)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"cluster file {path}: {exc}") from exc
    check_token(cluster.cluster.prefix, f"cluster file {path}: cluster.prefix")
    for name in cluster.services:
        check_token(name, f"cluster file {path}: services.{name}")
    return cluster


def env_value(value: Any) -> str:
    """A config value as an environment string the config loader converts back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return msgspec.json.encode(value).decode()
    return str(value)


def service_env(service: str, values: dict[str, Any]) -> dict[str, str]:
    """``RINGMASTER_<SERVICE>_<FIELD>`` variables for a child's config."""
    return {f"RINGMASTER_{service.upper()}_{k.upper()}": env_value(v) for k, v in values.items()}
