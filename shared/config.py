"""Typed service configuration: defaults <- TOML file <- environment <- command line.

A config is a msgspec Struct that rejects unknown fields. Every value is checked
once, at load; a bad one raises ConfigError naming the field and where the value
came from, so a service exits with one clear line instead of failing later.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from shared.errors import ConfigError
from shared.subjects import check_token

Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class BaseConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields every service has. Services subclass it and add their own."""

    nats_url: str = "nats://127.0.0.1:4222"
    prefix: str = "ringmaster"
    instance: str = ""
    beacon_interval: Positive = 1.0
    connect_timeout: Positive = 5.0
    shutdown_timeout: Positive = 10.0
    drain_timeout: Positive = 2.0
    ack_timeout: Positive = 5.0
    outbox_size: PositiveInt = 10_000
    max_message_bytes: PositiveInt = 1_048_576
    handler_concurrency: PositiveInt = 64
    health_window_s: Annotated[float, msgspec.Meta(ge=1)] = 60.0
    max_error_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.1
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    events_max_age_s: Positive = 7 * 24 * 3600.0
    events_max_bytes: PositiveInt = 1 << 30
    credentials_file: str = ""  # a .creds, nkey seed or user file (shared/credentials.py)
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    log_level: str = "INFO"
    #: Records at or above this level also go to ``P.log.<service>.<instance>``.
    log_stream_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    #: Records waiting to be published; past it new ones are dropped and counted.
    log_queue_size: PositiveInt = 1000
    logs_max_age_s: Positive = 3 * 24 * 3600.0
    logs_max_bytes: PositiveInt = 256 << 20


C = TypeVar("C", bound=BaseConfig)

_PATH = re.compile(r"at `\$\.([A-Za-z0-9_]+)")


def default_instance() -> str:
    """A subject-safe instance name: short host name and pid."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0]) or "host"
    return f"{host}-{os.getpid()}"


def _env_value(raw: str) -> Any:
    # Lists and tables come from the environment as JSON; scalars stay strings
    # and msgspec converts them (strict=False) against the field's type.
    stripped = raw.strip()
    if stripped[:1] in "[{":
        try:
            return msgspec.json.decode(stripped)
        except msgspec.DecodeError:
            return raw
    return raw


def build_parser(
    cls: type[BaseConfig], prog: str, description: str = ""
) -> argparse.ArgumentParser:
    """An argparse parser with ``--config`` and one ``--field-name`` option per field."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", metavar="FILE", help="TOML file of config values")
    for field in msgspec.structs.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, dest=field.name, metavar="VALUE", default=None)
    return parser


def load_config(
    cls: type[C],
    service: str,
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    prog: str | None = None,
) -> C:
    """Load ``cls`` for ``service``. Bad arguments exit with usage (argparse's exit 2)."""
    env = os.environ if env is None else env
    args = build_parser(cls, prog or f"ringmaster service {service}").parse_args(argv)
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    names = {f.name for f in msgspec.structs.fields(cls)}

    if args.config:
        path = Path(args.config)
        try:
            table = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        for key, value in table.items():
            values[key] = value
            origin[key] = f"file {path}"

    if "NATS_URL" in env:
        values["nats_url"] = env["NATS_URL"]
        origin["nats_url"] = "environment NATS_URL"
    env_prefix = f"RINGMASTER_{service.upper()}_"
    for var, raw in env.items():
        if var.startswith(env_prefix):
            key = var[len(env_prefix) :].lower()
            if key not in names:
                raise ConfigError(f"environment {var}: {service} has no config field {key!r}")
            values[key] = _env_value(raw)
            origin[key] = f"environment {var}"

    for name in names:
        raw = getattr(args, name)
        if raw is not None:
            values[name] = _env_value(raw)
            origin[name] = "--" + name.replace("_", "-")

    return convert_config(cls, values, origin)


def convert_config(
    cls: type[C], values: dict[str, Any], origin: Mapping[str, str] | None = None
) -> C:
    """Check ``values`` against ``cls``; the error names the field and its source."""
    try:
        config = msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        field = match.group(1) if match else None
        where = f" (from {origin[field]})" if origin and field and field in origin else ""
        unknown = re.search(r"unknown field `([^`]+)`", text)
        if unknown:
            raise ConfigError(f"unknown config field {unknown.group(1)!r}{where}") from exc
        label = f"config field {field!r}" if field else "config"
        raise ConfigError(f"{label}: {text}{where}") from exc
    if not config.instance:
        config = msgspec.structs.replace(config, instance=default_instance())
    check_token(config.prefix, "config field 'prefix'")
    check_token(config.instance, "config field 'instance'")
    return config
