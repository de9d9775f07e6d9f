"""The bounded pieces of logging through the bus: the job output capture and the
log handler's queue (no server needed: nothing here publishes)."""

from __future__ import annotations

import asyncio
import logging

from shared.joblogs import JobLogs, OutputCapture, decode_logs, encode_logs
from shared.logstream import OWNER, BusLogHandler


def test_capture_keeps_head_and_tail_and_counts_the_rest() -> None:
    capture = OutputCapture(head=10, tail=20)
    for i in range(100):
        capture.feed(f"line {i:03d}\n".encode())  # 9 bytes each
    kept = capture.result()
    assert kept.total_bytes == 900
    assert kept.head == "line 000\nl"
    assert kept.tail.endswith("line 099\n") and len(kept.tail.encode()) <= 20
    assert kept.omitted_bytes == 900 - 10 - len(kept.tail.encode())
    assert "bytes omitted ..." in kept.text()


def test_capture_cuts_one_huge_line_to_the_tail_bound() -> None:
    capture = OutputCapture(head=4, tail=8)
    capture.feed(b"x" * 100 + b"END\n")
    kept = capture.result()
    assert kept.head == "xxxx" and kept.tail == "xxxxEND\n" and kept.omitted_bytes == 92


def test_small_output_is_kept_whole_and_round_trips() -> None:
    capture = OutputCapture()
    capture.feed(b"hello\n")
    logs = JobLogs(job_id="j", attempt=1, node_id="n", exit_code=0, stdout=capture.result())
    again = decode_logs(encode_logs(logs))
    assert again == logs and again.stdout.text() == "hello\n" and not again.stdout.omitted_bytes


def test_handler_queue_is_bounded_drops_are_counted_and_owned() -> None:
    async def scenario() -> None:
        owner, other = object(), object()
        handler = BusLogHandler(
            owner=owner, service="s", instance="i", host="h", pid=1, level="INFO", capacity=3
        )
        logger = logging.getLogger("ringmaster.test.logstream")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        try:
            token = OWNER.set(owner)
            logger.debug("below the threshold")
            for i in range(5):
                logger.info("record %d", i)
            OWNER.reset(token)
            token = OWNER.set(other)
            logger.warning("another service's record")
            OWNER.reset(token)
        finally:
            logger.removeHandler(handler)
        assert handler.wake.is_set()
        taken = handler.take()
        assert [e.message for e in taken] == ["record 0", "record 1", "record 2"]
        assert taken[0].service == "s" and taken[0].level == "INFO"
        details = handler.details()
        assert details["queued"] == 3 and details["dropped_full"] == 2 and details["waiting"] == 0

    asyncio.run(scenario())
