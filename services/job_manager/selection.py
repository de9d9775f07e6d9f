"""Asking the node selector for the best node of a job, through a circuit breaker.

Only jobs whose node choice matters ask (``policy.needs_selector``): GPUs, a memory
minimum, or a retry that must avoid the node that failed it. Any failure (selector
down, open breaker, an error reply, nothing fits) is counted and answers None, and the
job goes to its capability pool instead (late binding): a dispatch never waits on the
selector being up.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import msgspec
import nats.errors
from nats.aio.client import Client

from shared.circuit_breaker import CircuitBreaker
from shared.codec import decode, encode
from shared.errors import RequestError, Unavailable
from shared.intake import ERROR_CODE_HEADER
from shared.jobs import JobRecord, SelectReply, SelectRequest
from shared.subjects import Subjects

log = logging.getLogger("ringmaster.job_manager.dispatch")

SELECTOR = "node_selector"


class SelectorError(Unavailable):
    """The node selector answered with an error."""


class Selection:
    """The selector's choice for one record at a time; counts in the dispatcher's stats."""

    def __init__(
        self,
        *,
        nc: Client,
        subjects: Subjects,
        breaker: CircuitBreaker,
        timeout: Callable[[], float],
        stats: Counter[str],
    ) -> None:
        self.nc = nc
        self.subjects = subjects
        self.breaker = breaker
        #: Read at each request, so a reloaded ``select_timeout_s`` applies at once.
        self.timeout = timeout
        self.stats = stats

    async def select(self, rec: JobRecord) -> str | None:
        """The selector's best node for ``rec``, or None (down, open breaker, no node)."""
        request = SelectRequest(
            requirement=rec.spec.requirements,
            count=1,
            exclude=[rec.node_id] if rec.node_id else [],
        )
        try:
            nodes = await self.breaker.call(self._ask, request)
        except (nats.errors.Error, TimeoutError, RequestError) as exc:
            self.stats["select_failed"] += 1
            log.debug("selector unavailable for %s: %r", rec.job_id, exc)
            return None
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.stats["select_unreadable"] += 1
            return None
        if not nodes:
            self.stats["select_empty"] += 1
            return None
        self.stats["selected"] += 1
        return nodes[0]

    async def _ask(self, request: SelectRequest) -> list[str]:
        reply = await self.nc.request(
            self.subjects.api(SELECTOR, "select"), encode(request), timeout=self.timeout()
        )
        code = (reply.headers or {}).get(ERROR_CODE_HEADER)
        if code is not None:
            raise SelectorError(f"node selector answered error {code}")
        return decode(SelectReply, reply.data).nodes
