"""A tiny HTTP/1.1 server for ``/healthz``, ``/status`` and the dashboard, with no extra
dependency.

One request per connection (``Connection: close``), GET and HEAD only. Three kinds of
path: routes (a function answering JSON), pages (fixed bytes with their content type,
the dashboard's files) and streams (a handler that takes the connection over after the
request head, for server-sent events). A client can never hurt the service: the
request head is bounded in size, reading it and writing the answer are bounded in
time, and connections past the limit get a 503 at once. Every outcome is counted in
``stats`` for the service's health details.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from shared.codec import encode
from shared.contracts import ErrorBody, ErrorReply
from shared.http_auth import HEADER, OPEN_PATHS, authorized, header_value

log = logging.getLogger("ringmaster.orchestrator.http")

#: A route answers with a status code and a JSON body.
Route = Callable[[], tuple[int, bytes]]
#: A page: its content type and its bytes, served as they are.
Page = tuple[str, bytes]
#: A stream handler owns the connection once the request head is read (GET only).
Stream = Callable[[SocketStream], Awaitable[None]]

JSON = "application/json"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_REQUEST_LINE = re.compile(r"^([A-Z]+) (/[!-~]*) HTTP/1\.[01]$")
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t -~]*$")


class BadRequest(Exception):
    """The request cannot be answered; ``code`` is the HTTP status to send."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_body(code: int, message: str) -> bytes:
    """The JSON error body, shaped like every error reply on the bus."""
    return encode(ErrorReply(ErrorBody(code=code, message=message)))


def response_head(code: int, content_type: str, length: int | None, extra: str = "") -> bytes:
    """Status line and headers; ``length`` None leaves out Content-Length (body runs to close)."""
    head = f"HTTP/1.1 {code} {_REASONS.get(code, 'Unknown')}\r\nContent-Type: {content_type}\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return (head + f"Cache-Control: no-store\r\nConnection: close\r\n{extra}\r\n").encode()


def parse_head(head: bytes) -> tuple[str, str]:
    """Method and path (query dropped) of a request head; BadRequest if malformed."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "request head is not ASCII") from None
    line, *headers = text.split("\r\n")
    match = _REQUEST_LINE.match(line)
    if match is None:
        raise BadRequest(400, "malformed request line")
    if any(not _HEADER.match(h) for h in headers if h):
        raise BadRequest(400, "malformed header")
    return match.group(1), match.group(2).split("?", 1)[0]


class HttpServer:
    """Serves ``routes``, ``pages`` and ``streams`` by path until cancelled (``tg.start``)."""

    def __init__(
        self,
        host: str,
        port: int,
        routes: Mapping[str, Route],
        *,
        pages: Mapping[str, Page] | None = None,
        streams: Mapping[str, Stream] | None = None,
        timeout: float = 5.0,
        max_request_bytes: int = 8192,
        max_connections: int = 64,
        token: str = "",
    ) -> None:
        self.host = host
        # With a token, only /healthz and the dashboard's static files (no data) are open.
        self.token = token
        self.open_paths = OPEN_PATHS | {p for p in pages or {} if p != "/"}
        self.requested_port = port
        self.routes = dict(routes)
        self.pages = dict(pages or {})
        self.streams = dict(streams or {})
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes
        self.max_connections = max_connections
        self.port: int | None = None
        self.active = 0
        self.stats: Counter[str] = Counter()
        self._logged: set[str] = set()

    @property
    def paths(self) -> set[str]:
        """Every path served."""
        return {*self.routes, *self.pages, *self.streams}

    @property
    def url(self) -> str:
        """Base URL of the server once bound."""
        return f"http://{self.host}:{self.port}"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind, report started (``port`` is set by then), and serve until cancelled."""
        listener = await anyio.create_tcp_listener(
            local_host=self.host, local_port=self.requested_port
        )
        async with listener:
            self.port = listener.extra(SocketAttribute.local_port)
            log.info("HTTP on %s (%s)", self.url, ", ".join(sorted(self.paths)))
            task_status.started()
            await listener.serve(self._serve_one)

    async def _serve_one(self, stream: SocketStream) -> None:
        try:
            async with stream:
                if self.active >= self.max_connections:
                    self.stats["rejected_busy"] += 1
                    await self._send(stream, 503, error_body(503, "too many connections"), False)
                    return
                self.active += 1
                try:
                    await self._answer(stream)
                finally:
                    self.active -= 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            # The client went away mid-answer: its loss, counted, never the service's.
            self.stats["broken"] += 1

    async def _answer(self, stream: SocketStream) -> None:
        try:
            with anyio.fail_after(self.timeout):
                head = await self._read_head(stream)
            if head is None:
                self.stats["closed_early"] += 1
                return
            method, path = parse_head(head)
            text = head.decode("ascii")  # parse_head checked it is ASCII
            target = text.split(" ", 2)[1]
            if not authorized(self.token, header_value(text, HEADER), target, self.open_paths):
                self.stats["unauthorized"] += 1
                raise BadRequest(401, f"missing or wrong bearer token (header {HEADER})")
            handler = self.streams.get(path)
            if handler is not None and method == "GET":
                self.stats["streams"] += 1
                await handler(stream)
                return
            code, body, content_type = self._route(method, path)
            await self._send(stream, code, body, method == "HEAD", content_type)
        except BadRequest as exc:
            await self._send(stream, exc.code, error_body(exc.code, exc.message), False)
        except TimeoutError:
            self.stats["timeouts"] += 1

    async def _read_head(self, stream: SocketStream) -> bytes | None:
        buf = b""
        while True:
            try:
                chunk = await stream.receive(4096)
            except anyio.EndOfStream:
                if buf:
                    raise BadRequest(400, "connection closed inside the request") from None
                return None
            # Search only where the terminator can be, so a trickling client costs O(n).
            start = max(0, len(buf) - 3)
            buf += chunk
            end = buf.find(b"\r\n\r\n", start)
            if end >= 0:
                if end > self.max_request_bytes:
                    raise BadRequest(431, "request head too large")
                return buf[:end]
            if len(buf) > self.max_request_bytes:
                raise BadRequest(431, "request head too large")

    def _route(self, method: str, path: str) -> tuple[int, bytes, str]:
        if method not in ("GET", "HEAD"):
            raise BadRequest(405, f"method {method} not allowed")
        page = self.pages.get(path)
        if page is not None:
            return 200, page[1], page[0]
        if path in self.streams:
            raise BadRequest(405, f"{path} is a stream: GET only")
        route = self.routes.get(path)
        if route is None:
            raise BadRequest(404, f"no such path {path}")
        try:
            return *route(), JSON
        except Exception as exc:  # a bug in a route: counted and answered, never fatal
            self.stats["route_errors"] += 1
            if path not in self._logged:
                self._logged.add(path)
                log.exception("HTTP route %s failed (further ones are only counted)", path)
            return 500, error_body(500, f"internal error: {type(exc).__name__}"), JSON

    async def _send(
        self,
        stream: SocketStream,
        code: int,
        body: bytes,
        head_only: bool,
        content_type: str = JSON,
    ) -> None:
        self.stats[str(code)] += 1
        extra = "Allow: GET, HEAD\r\n" if code == 405 else ""
        extra += "WWW-Authenticate: Bearer\r\n" if code == 401 else ""
        header = response_head(code, content_type, len(body), extra)
        payload = header + (b"" if head_only else body)
        try:
            with anyio.fail_after(self.timeout):
                await stream.send(payload)
        except TimeoutError:
            self.stats["timeouts"] += 1
