"""A publisher in its own process that sends as fast as nats-py lets it.

``python -m bench._pub URL RESULT_FILE --count N [--subject S --size B]`` sends N raw
payloads; ``--prefix P --instances K --count N`` sends N Beacons of K distinct
instances of one service, round-robin, each with its own rising ``seq``, then one
STOPPED beacon per instance (so they leave the registry in order instead of being
probed and declared LOST while the next measurement runs), then with ``--sentinel
NAME`` the first beacon of instance NAME: its SERVICE_REGISTERED tells the reader
when the orchestrator took in the last message. Writes RESULT_FILE
({start, end, sent}, wall-clock) after a final flush.
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


def beacon_payloads(
    prefix: str, service: str, instances: int, count: int, sentinel: str = ""
) -> list[tuple[str, bytes]]:
    """``count`` RUNNING beacons, instance after instance, one STOPPED each, the sentinel."""
    subjects = Subjects(prefix)
    now = time.time()
    out: list[tuple[str, bytes]] = []
    rounds = -(-count // instances)
    names = [f"i{os.getpid()}-{i}" for i in range(instances)]
    plan = [(seq, ServiceStatus.RUNNING, names) for seq in range(1, rounds + 1)]
    plan.append((rounds + 1, ServiceStatus.STOPPED, names))
    if sentinel:
        plan.append((1, ServiceStatus.RUNNING, [sentinel]))
    for seq, status, round_names in plan:
        for name in round_names:
            if status is ServiceStatus.RUNNING and len(out) >= count and name != sentinel:
                break
            beacon = Beacon(
                service=service,
                instance=name,
                version="bench",
                host="bench",
                pid=os.getpid(),
                status=status,
                healthy=True,
                message="ok",
                started_at=now,
                sent_at=now,
                seq=seq,
                interval_s=1.0,
            )
            out.append((subjects.beacon(service, beacon.instance), encode(beacon)))
    return out


async def main(args: argparse.Namespace) -> None:
    """Connect, publish, flush, report."""
    nc = await nats.connect(args.url, connect_timeout=5, pending_size=8 * 1024 * 1024)
    if args.prefix:
        # Encoded before the clock starts: the figure is the bus and the consumer.
        messages = beacon_payloads(
            args.prefix, args.service, args.instances, args.count, args.sentinel
        )
    else:
        payload = b"x" * args.size
        messages = [(args.subject, payload)] * args.count
    start = time.time()
    for subject, payload in messages:
        await nc.publish(subject, payload)
    await nc.flush(timeout=60)
    end = time.time()
    write_json(Path(args.result), {"start": start, "end": end, "sent": len(messages)})
    await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("result")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--subject", default="bench.raw")
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--service", default="benchsvc")
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--sentinel", default="")
    asyncio.run(main(parser.parse_args()))
