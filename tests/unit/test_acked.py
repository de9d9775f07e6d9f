"""Acks filed into their window: what each reply to a publish means, and when a window is done."""

from __future__ import annotations

from typing import Any

import nats.js.errors
import pytest
from nats.aio.msg import Msg

from shared.acked import PENDING, AckedPublisher, AckWindow, outcome


def reply(data: bytes, headers: dict[str, str] | None = None, subject: str = "1") -> Msg:
    client: Any = None  # never used: the message is only read
    return Msg(_client=client, subject=subject, data=data, headers=headers)


def test_a_puback_is_stored_and_errors_become_what_nats_py_raises() -> None:
    assert outcome(reply(b'{"stream":"S","seq":7}')) is None
    assert outcome(reply(b'{"stream":"S","seq":7,"duplicate":true}')) is None
    refused = outcome(reply(b'{"error":{"code":400,"err_code":10054,"description":"too big"}}'))
    assert isinstance(refused, nats.js.errors.BadRequestError) and refused.err_code == 10054
    other = outcome(reply(b'{"error":{"code":503,"description":"no leader"}}'))
    assert isinstance(other, nats.js.errors.APIError)
    assert not isinstance(other, nats.js.errors.BadRequestError)
    gone = outcome(reply(b"", {"Status": "503"}))
    assert isinstance(gone, nats.js.errors.NoStreamResponseError)
    assert isinstance(outcome(reply(b"not json")), nats.js.errors.APIError)


def test_a_window_is_done_when_every_message_sent_has_its_ack_once() -> None:
    window = AckWindow(base=10, size=3)
    window.file(0, None)
    window.file(0, ValueError("a repeat is ignored"))
    assert window.outcomes[0] is None and not window.done.is_set()
    window.trim(2)  # the third publish failed: only two went out
    assert window.outcomes[1] is PENDING and not window.done.is_set()
    window.file(1, None)
    assert window.done.is_set() and window.outcomes == [None, None]
    empty = AckWindow(base=13, size=2)
    empty.trim(0)
    assert empty.done.is_set()


@pytest.mark.anyio
async def test_an_ack_reaches_its_window_and_one_after_it_closed_is_counted() -> None:
    client: Any = None  # start() is not called: no subscription, the acks are fed by hand
    publisher = AckedPublisher(client)
    first, second = publisher.window(2), publisher.window(2)
    assert (first.base, second.base) == (0, 2)
    await publisher._on_ack(reply(b'{"stream":"S","seq":1}', subject="3"))
    assert second.outcomes[1] is None and first.outcomes == [PENDING, PENDING]
    publisher.close(first)
    await publisher._on_ack(reply(b'{"stream":"S","seq":2}', subject="0"))
    await publisher._on_ack(reply(b"{}", subject="not-a-number"))
    assert publisher.late == 2 and first.outcomes == [PENDING, PENDING]
