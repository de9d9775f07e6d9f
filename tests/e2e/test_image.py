"""The image's entrypoint runs every service in a venv built the way the Dockerfile builds it.

No Docker engine is needed: the test copies into a source directory exactly what
the Dockerfile's ``COPY`` lines copy, runs ``deploy/install.sh`` (the script the
Dockerfile's ``RUN`` lines call) into a fresh virtual environment, and starts each
service with ``deploy/entrypoint.sh`` and its own credentials against a nats-server
with the generated permissions. The HEALTHCHECK command (``--probe``) must say
ready for each, and SIGTERM must stop each with exit code 0.

Like Docker's layer cache, the dependency step is reused while ``pyproject.toml``
and the installer are unchanged; the application step runs every time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from shared.embedded import EmbeddedServer
from shared.permissions import KINDS
from shared.procutil import set_parent_death_signal
from shared.testing.cluster import generate_auth, single_server
from shared.testing.server import new_prefix

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
INSTALL = REPO / "deploy" / "install.sh"
ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"

#: Settings a deployment gives these services so they fit a test machine.
EXTRA_ENV = {
    "orchestrator": {"HTTP_PORT": "-1"},
    "status_metrics_collector": {"PROMETHEUS_PORT": "-1"},
    "node_agent": {"MIN_FREE_DISK_MB": "1", "MIN_MEMORY_MB": "1"},
}


def copied_into_src() -> list[str]:
    """What the Dockerfile copies into /src, in order (``COPY SRC... DEST`` lines)."""
    sources: list[str] = []
    workdir = ""
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["WORKDIR"]:
            workdir = words[1]
        elif words[:1] == ["COPY"] and workdir == "/src" and not words[-1].startswith("/"):
            sources += words[1:-1]
    return sources


def test_the_dockerfile_installs_with_the_shared_script() -> None:
    text = DOCKERFILE.read_text()
    assert "RUN ringmaster-install deps /opt/ringmaster /src" in text
    assert "RUN ringmaster-install app /opt/ringmaster /src" in text
    assert 'ENTRYPOINT ["ringmaster-entrypoint"]' in text
    assert {"pyproject.toml", "shared", "services", "workloads"} <= set(copied_into_src())


def run(*argv: str | Path, timeout: float) -> None:
    """Run a build step; its output is shown only when it fails."""
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv[:2]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv made by deploy/install.sh from a copy of what the Dockerfile copies."""
    src = tmp_path_factory.mktemp("src")
    for name in copied_into_src():
        path = REPO / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + INSTALL.read_bytes())
    cache = Path(sys.prefix) / "image-test"
    if not os.access(sys.prefix, os.W_OK):
        cache = tmp_path_factory.mktemp("image-test")
    venv = cache / key.hexdigest()[:16]
    if not (venv / ".deps-installed").exists():
        shutil.rmtree(cache, ignore_errors=True)  # older dependency layers
        run(INSTALL, "deps", venv, src, timeout=900)
        (venv / ".deps-installed").touch()
    run(INSTALL, "app", venv, src, timeout=600)
    return venv


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[EmbeddedServer, str, Path]]:
    """A nats-server with the generated permissions, its prefix and the user files."""
    prefix = new_prefix()
    secrets = tmp_path / "secrets"
    srv = single_server(tmp_path / "nats", generate_auth(prefix, secrets))
    try:
        yield srv, prefix, secrets
    finally:
        srv.stop()


def container_env(venv: Path, url: str, prefix: str, secrets: Path, kind: str) -> dict[str, str]:
    """What a container of ``kind`` gets: the image's PATH and its own settings."""
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONUNBUFFERED": "1",
        "NATS_URL": url,
        "RINGMASTER_SERVICE": kind,
        "RINGMASTER_INSTANCE": f"img-{kind}".replace("_", "-"),
        "RINGMASTER_CREDENTIALS_FILE": str(secrets / f"{kind}.user"),
        "RINGMASTER_PREFIX": prefix,
        f"RINGMASTER_{kind.upper()}_PREFIX": prefix,
    }
    for key, value in EXTRA_ENV.get(kind, {}).items():
        env[f"RINGMASTER_{kind.upper()}_{key}"] = value
    return env


# Building the dependency layer downloads the wheels the first time on a machine.
@pytest.mark.timeout(900)
def test_entrypoint_runs_every_service_from_the_image_venv(
    image_venv: Path, server: tuple[EmbeddedServer, str, Path], tmp_path: Path
) -> None:
    srv, prefix, secrets = server
    assert (image_venv / "bin" / "ringmaster").is_file()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    envs = {k: container_env(image_venv, srv.url, prefix, secrets, k) for k in KINDS}
    try:
        for kind in KINDS:
            work = tmp_path / kind
            work.mkdir()
            procs[kind] = subprocess.Popen(
                [str(ENTRYPOINT)],
                env=envs[kind],
                cwd=work,
                stdout=(work / "out.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=set_parent_death_signal,  # the services die with pytest
            )
        waiting = set(KINDS)
        deadline = time.monotonic() + 120  # a generous bound for a loaded 2-core machine
        while waiting and time.monotonic() < deadline:
            for kind in sorted(waiting):
                assert procs[kind].poll() is None, (tmp_path / kind / "out.log").read_text()
                probe = subprocess.run(
                    [str(ENTRYPOINT), "--probe", "--readiness"],
                    env=envs[kind],
                    capture_output=True,
                    timeout=30,
                )
                if probe.returncode == 0:
                    waiting.discard(kind)
            time.sleep(0.5)
        assert not waiting, f"not ready: {sorted(waiting)}"
        # The entrypoint exec'd ringmaster, whose script runs the venv's python.
        interpreters = {k: psutil.Process(p.pid).cmdline()[0] for k, p in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for kind, proc in procs.items():
            try:
                codes[kind] = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[kind] = proc.wait()
    assert codes == dict.fromkeys(KINDS, 0)
    # Every service ran the image venv's interpreter, not the test's own environment.
    assert interpreters == dict.fromkeys(KINDS, str(image_venv / "bin" / "python"))
    assert srv.log_file is not None
    assert "Violation" not in srv.log_file.read_text(errors="replace")
