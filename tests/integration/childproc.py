"""A stand-in service process for the supervisor tests (run as a script, not imported).

``childproc.py SERVICE`` behaves as the cluster file's config for SERVICE says, read
from the ``RINGMASTER_<SERVICE>_<FIELD>`` variables the supervisor sets:

- prints ``instance=<instance> pid=<pid>`` (the supervisor appends it to the log);
- ``grandchild = true``: first starts a sleeping grandchild in its process group and
  prints ``grandchild=<pid>``;
- ``ignore_term = true``: ignores SIGTERM, so only SIGKILL stops it;
- ``crash_unless = PATH``: exits with 3 at once while PATH does not exist;
- ``exit_code = N``: exits with N at once; otherwise sleeps until killed.

``childproc.py --supervise LOG_DIR`` runs a real Supervisor over two sleeping
instances of this script, prints their pids as one JSON line and runs until killed:
the test then kills it with SIGKILL and checks the children die with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def child(service: str) -> int:
    """Behave as the stand-in service ``service``."""
    prefix = f"RINGMASTER_{service.upper()}_"
    env = {k[len(prefix) :].lower(): v for k, v in os.environ.items() if k.startswith(prefix)}
    if env.get("ignore_term") == "true":
        # Before the first line: the supervisor runs children unbuffered, and a test
        # that waits for this line must find SIGTERM already ignored.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"instance={env.get('instance')} pid={os.getpid()} prefix={env.get('prefix')}")
    if env.get("grandchild") == "true":
        grand = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(f"grandchild={grand.pid}")
    sys.stdout.flush()
    if "crash_unless" in env and not Path(env["crash_unless"]).exists():
        return 3  # the cause (say, NATS away) has not passed yet
    if "exit_code" in env:
        return int(env["exit_code"])
    while True:
        time.sleep(60)


def supervise(log_dir: Path) -> None:
    """Run a Supervisor over two sleepers; print their pids; run until killed."""
    import anyio

    from services.orchestrator.supervisor import Supervisor
    from shared.cluster import ClusterFile, ServiceEntry
    from shared.events import EventData

    async def emit(data: EventData) -> bool:
        return True

    async def main() -> None:
        cluster = ClusterFile(services={"sleeper": ServiceEntry(instances=2)})
        sup = Supervisor(
            cluster,
            nats_url="nats://127.0.0.1:1",
            emit=emit,
            log_dir=log_dir,
            argv_for=lambda name: [sys.executable, __file__, name],
        )
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            print(json.dumps([v.pid for v in sup.snapshot()]), flush=True)

    anyio.run(main)


if __name__ == "__main__":
    if sys.argv[1] == "--supervise":
        supervise(Path(sys.argv[2]))
    else:
        sys.exit(child(sys.argv[1]))
