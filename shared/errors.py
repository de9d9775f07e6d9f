"""Ringmaster's error hierarchy.

Expected failures are typed so callers can act on them; anything else is a bug,
answered as a counted 500 by the request handlers::

    RingmasterError
    ├── ConfigError             bad configuration; names the field that is wrong
    ├── BusError                the NATS connection or the embedded server
    │   ├── ConnectError        NATS unreachable within connect_timeout
    │   ├── ServerVersionError  nats-server too old for what we rely on
    │   └── EmbeddedServerError the bundled nats-server could not start
    └── RequestError            an error reply on a request/reply subject
        ├── BadRequest     400  the request did not decode or was invalid
        ├── Forbidden      403  the sender may not speak for what it names
        ├── NotFound       404  the thing asked for does not exist
        ├── Conflict       409  a compare-and-set or state rule refused it
        └── Unavailable    503  paused, draining, or a dependency is down
"""

from __future__ import annotations


class RingmasterError(Exception):
    """Base of every error Ringmaster raises on purpose."""


class ConfigError(RingmasterError):
    """Configuration that cannot be used; the message names the field."""


class BusError(RingmasterError):
    """A problem with the NATS connection or server."""


class ConnectError(BusError):
    """NATS could not be reached within the configured connect timeout."""


class ServerVersionError(BusError):
    """The nats-server is older than the version Ringmaster requires."""


class EmbeddedServerError(BusError):
    """The bundled nats-server could not be started."""


class RequestError(RingmasterError):
    """An error that becomes a typed error reply; ``code`` follows HTTP."""

    code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RequestError):
    """The request did not decode or broke a rule of its schema."""

    code = 400


class Forbidden(RequestError):
    """The request names someone its sender may not speak for (another node)."""

    code = 403


class NotFound(RequestError):
    """The requested record does not exist."""

    code = 404


class Conflict(RequestError):
    """A compare-and-set or state-machine rule refused the change."""

    code = 409


class Unavailable(RequestError):
    """The service cannot take the request now (paused, draining, dependency down)."""

    code = 503


_BY_CODE: dict[int, type[RequestError]] = {
    cls.code: cls for cls in (BadRequest, Forbidden, NotFound, Conflict, Unavailable)
}


def error_for_code(code: int, message: str) -> RequestError:
    """Rebuild the typed error a reply carried, for clients of the API."""
    cls = _BY_CODE.get(code, RequestError)
    err = cls(message)
    err.code = code
    return err
