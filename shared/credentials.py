"""NATS credentials and TLS: from files, turned into nats-py connect options.

A credentials file is one of three kinds, told apart by its content:

- a NATS ``.creds`` file (a user JWT and its nkey seed, from ``nsc``): decentralized auth;
- an nkey seed file (one line starting with ``SU``): nkey auth;
- a user file written by ``ringmaster nats-config``: ``key=value`` lines
  ``user``, ``password`` and optionally ``inbox_prefix``.

The password of a user file never leaves this module except as a connect option:
it is not logged, not put in health details and not echoed in errors. TLS uses
``ca_file`` to verify the server and an optional client certificate and key.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ConfigError

JWT_MARKER = "-----BEGIN NATS USER JWT-----"
USER_FILE_KEYS = ("user", "password", "inbox_prefix")


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the TLS files of a client; all empty means plain TCP."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @property
    def enabled(self) -> bool:
        """Whether any TLS option is set."""
        return bool(self.ca_file or self.cert_file or self.key_file)


@dataclass(frozen=True, repr=False)
class UserFile:
    """A user and password (and inbox prefix) read from a user file."""

    user: str
    password: str
    inbox_prefix: str = ""

    def __repr__(self) -> str:
        # Never print the password, even in a traceback's locals.
        return f"UserFile(user={self.user!r}, inbox_prefix={self.inbox_prefix!r})"


def parse_user_file(text: str, path: str = "<text>") -> UserFile:
    """Parse ``key=value`` lines (``#`` comments allowed); ConfigError names the line."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or key not in USER_FILE_KEYS:
            # The line itself may hold a secret: name only its number.
            raise ConfigError(
                f"credentials file {path}: line {number} is not one of "
                f"{', '.join(k + '=...' for k in USER_FILE_KEYS)}"
            )
        values[key] = value.strip()
    if not values.get("user") or not values.get("password"):
        raise ConfigError(f"credentials file {path}: needs user=... and password=... lines")
    return UserFile(values["user"], values["password"], values.get("inbox_prefix", ""))


def write_user_file(path: Path, user: UserFile) -> None:
    """Write ``user`` to ``path``, readable by its owner only."""
    text = f"# NATS user for ringmaster; keep secret\nuser={user.user}\npassword={user.password}\n"
    if user.inbox_prefix:
        text += f"inbox_prefix={user.inbox_prefix}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text, encoding="utf-8")


def credential_options(credentials_file: str) -> dict[str, Any]:
    """nats-py ``connect`` keyword arguments for a credentials file ('' means none)."""
    if not credentials_file:
        return {}
    path = Path(credentials_file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"credentials file {path}: {exc.strerror or exc}") from None
    if JWT_MARKER in text:
        return {"user_credentials": str(path)}
    if text.strip().startswith("SU"):
        return {"nkeys_seed": str(path)}
    user = parse_user_file(text, str(path))
    options: dict[str, Any] = {"user": user.user, "password": user.password}
    if user.inbox_prefix:
        options["inbox_prefix"] = user.inbox_prefix
    return options


def tls_options(tls: TlsFiles) -> dict[str, Any]:
    """nats-py ``connect`` keyword arguments for TLS (none when nothing is set)."""
    if not tls.enabled:
        return {}
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("tls_cert_file and tls_key_file go together: set both or neither")
    # Each file is loaded on its own, so the one-line error names the file at fault.
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS files: tls_ca_file {tls.ca_file}: {_why(exc)}") from None
    if tls.cert_file:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"TLS files: tls_cert_file {tls.cert_file} / tls_key_file {tls.key_file}: "
                f"{_why(exc)}"
            ) from None
    return {"tls": context}


def _why(exc: OSError | ssl.SSLError) -> str:
    """The reason of an SSL or file error, on one line and without the C source location."""
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).replace("_", " ").lower()
    return exc.strerror or str(exc)


_URL_SECRET = re.compile(r"(//[^:/@,]*):[^@/,]*@")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and errors."""
    return _URL_SECRET.sub(r"\1:***@", url)
