"""A job's stdout and stderr, kept within bounds and stored as one blob per attempt.

The node agent feeds every line the job prints to an :class:`OutputCapture` per
stream: the first ``head`` bytes are kept, then the last ``tail`` bytes, and what
fell between is counted, never silently lost. After the process ends the two
captures become a :class:`JobLogs` (JSON), uploaded as a content-addressed blob; its
DataRef goes in the attempt's JobResult (``logs``) and in a JOB_LOGS_STORED event.
"""

from __future__ import annotations

from collections import deque

import msgspec

#: Bytes kept from the start of each stream (where a program says what it runs).
HEAD_BYTES = 64 * 1024
#: Bytes kept from the end of each stream (where it says why it stopped).
TAIL_BYTES = 1024 * 1024
#: The DataRef name of a logs blob.
LOGS_NAME = "logs.json"


class StreamText(msgspec.Struct, frozen=True, kw_only=True):
    """What was kept of one stream, and how much of it was left out."""

    head: str = ""
    tail: str = ""
    total_bytes: int = 0
    omitted_bytes: int = 0

    def text(self) -> str:
        """The kept text, with a marker line where bytes were left out."""
        if not self.omitted_bytes:
            return self.head + self.tail
        marker = f"[... {self.omitted_bytes} bytes omitted ...]\n"
        return self.head + marker + self.tail


class JobLogs(msgspec.Struct, frozen=True, kw_only=True):
    """The blob of one attempt's output (``logs.json``)."""

    job_id: str
    attempt: int
    node_id: str
    exit_code: int | None = None
    stdout: StreamText = msgspec.field(default_factory=StreamText)
    stderr: StreamText = msgspec.field(default_factory=StreamText)


class OutputCapture:
    """Keeps the head and the tail of one stream within ``head + tail`` bytes."""

    def __init__(self, head: int = HEAD_BYTES, tail: int = TAIL_BYTES) -> None:
        self.head_limit = head
        self.tail_limit = tail
        self._head = bytearray()
        self._tail: deque[bytes] = deque()
        self._tail_bytes = 0
        self.total = 0
        self.omitted = 0

    def feed(self, line: bytes) -> None:
        """Add one line (a line callback of the process supervisor)."""
        self.total += len(line)
        room = self.head_limit - len(self._head)
        if room > 0:
            self._head += line[:room]
            line = line[room:]
            if not line:
                return
        if len(line) > self.tail_limit:
            self.omitted += len(line) - self.tail_limit
            line = line[-self.tail_limit :]
        self._tail.append(line)
        self._tail_bytes += len(line)
        while self._tail_bytes > self.tail_limit:
            dropped = self._tail.popleft()
            self._tail_bytes -= len(dropped)
            self.omitted += len(dropped)

    def result(self) -> StreamText:
        """What was kept, decoded (undecodable bytes replaced)."""
        return StreamText(
            head=bytes(self._head).decode(errors="replace"),
            tail=b"".join(self._tail).decode(errors="replace"),
            total_bytes=self.total,
            omitted_bytes=self.omitted,
        )


def encode_logs(logs: JobLogs) -> bytes:
    """The blob's bytes."""
    return msgspec.json.encode(logs)


def decode_logs(data: bytes) -> JobLogs:
    """A logs blob; raises msgspec.DecodeError or ValidationError when it is not one."""
    return msgspec.json.decode(data, type=JobLogs)
