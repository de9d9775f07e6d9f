"""N beaconing instances in one process: valid Beacons for N instance ids at an interval.

``python -m bench._beacons URL PREFIX N DURATION_S RESULT_FILE [--interval S]`` sends,
every interval, one RUNNING Beacon for each of N distinct instances of the service
``fleet``, spread evenly over the interval (what N instances cost the orchestrator),
for DURATION_S seconds; then one STOPPED beacon each, so they leave the registry
cleanly. Writes RESULT_FILE ({sent, start, end, late}): ``late`` counts slices the
process could not send on time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import nats

from bench.harness import write_json
from shared.codec import encode
from shared.contracts import Beacon, ServiceStatus
from shared.subjects import Subjects

SERVICE = "fleet"
SLICES = 20


def beacon(name: str, seq: int, status: ServiceStatus, started: float, interval: float) -> bytes:
    """One beacon of instance ``name``."""
    return encode(
        Beacon(
            service=SERVICE,
            instance=name,
            version="bench",
            host="bench",
            pid=os.getpid(),
            status=status,
            healthy=True,
            message="ok",
            started_at=started,
            sent_at=time.time(),
            seq=seq,
            interval_s=interval,
        )
    )


async def main(args: argparse.Namespace) -> None:
    """Beacon every instance each interval until the duration is over."""
    subjects = Subjects(args.prefix)
    nc = await nats.connect(args.url, connect_timeout=5, pending_size=32 * 2**20)
    names = [f"f{i}" for i in range(args.instances)]
    subject = {n: subjects.beacon(SERVICE, n) for n in names}
    started = time.time()
    step = args.interval / SLICES
    start = time.monotonic()
    sent = late = seq = 0
    while time.monotonic() - start < args.duration:
        seq += 1
        for s in range(SLICES):
            due = start + (seq - 1) * args.interval + s * step
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -step:
                late += 1
            for name in names[s::SLICES]:
                await nc.publish(
                    subject[name],
                    beacon(name, seq, ServiceStatus.RUNNING, started, args.interval),
                )
                sent += 1
    end = time.monotonic()
    for name in names:
        await nc.publish(
            subject[name], beacon(name, seq + 1, ServiceStatus.STOPPED, started, args.interval)
        )
    await nc.flush(timeout=30)
    write_json(
        Path(args.result), {"sent": sent, "start": start, "end": end, "late": late, "seq": seq}
    )
    await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("instances", type=int)
    parser.add_argument("duration", type=float)
    parser.add_argument("result")
    parser.add_argument("--interval", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
