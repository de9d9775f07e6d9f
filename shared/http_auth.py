"""Bearer tokens for the HTTP endpoints (orchestrator status and dashboard, Prometheus).

On loopback nobody else can reach them and no token is needed. Bound beyond loopback
they answer only a request carrying the token (``Authorization: Bearer <token>``, or
``?access_token=<token>`` for the dashboard's event stream, which a browser cannot
give headers); ``/healthz`` stays open for probes. The token comes from a file (a
compose or Kubernetes secret) and never appears in logs, health details or errors.
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path
from urllib.parse import parse_qs

from shared.errors import ConfigError

#: Paths answered without a token: liveness and readiness probes.
OPEN_PATHS = frozenset({"/healthz"})
HEADER = "Authorization"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the endpoint on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name, or 0.0.0.0 / :: (every interface) is not loopback


def read_token(path: str, field: str) -> str:
    """The token in file ``path``; ConfigError naming the file (never its content)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{field} {path}: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"{field} {path}: the file is empty; put the bearer token in it")
    if any(c.isspace() for c in token):
        raise ConfigError(f"{field} {path}: the token must be one line without spaces")
    return token


def check_binding(host: str, token_file: str, field: str) -> None:
    """Refuse a binding beyond loopback without a token file (and a token file unread)."""
    if token_file:
        read_token(token_file, field)
    elif not is_loopback(host):
        raise ValueError(
            f"{host!r} is beyond loopback: set {field} (a file holding the bearer token)"
        )


def token_of(path: str) -> str:
    """``path``'s ``access_token`` query value ('' when absent)."""
    _, _, query = path.partition("?")
    values = parse_qs(query).get("access_token", [])
    return values[0] if values else ""


def authorized(
    token: str, header: str | None, path: str, open_paths: frozenset[str] = OPEN_PATHS
) -> bool:
    """Whether a request may pass: no token set, an open path, or the right token."""
    bare = path.split("?", 1)[0]
    if not token or bare in open_paths:
        return True
    given = ""
    if header and header.startswith("Bearer "):
        given = header[len("Bearer ") :].strip()
    given = given or token_of(path)
    # Compare in constant time, so the answer's timing tells nothing about the token.
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def header_value(head: str, name: str) -> str | None:
    """The value of header ``name`` in a raw request head (case-insensitive)."""
    for line in head.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None
