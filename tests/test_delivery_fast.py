"""The shortcuts of the delivery path give exactly what the general code gives, for any input:
a message held whole made into its DATA payload at once, replies parsed in place, the Response
of a delivered message made field for field."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smtp_magic import _pipeline, transport
from smtp_magic.errors import ExitCode
from smtp_magic.models import Response
from smtp_magic.outbox import SendLog, SendRecord

# Bytes where the DATA transformation has something to do: line ends of every kind, dots.
MESSAGE_BYTES = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b" ", b"\xff"]),
                         max_size=40).map(b"".join)


@given(MESSAGE_BYTES)
@example(b"\r\r\n")
@example(b"\n\r")
@example(b"a\r\nb\r")
def test_line_ends_are_found_normal_exactly_when_every_one_is_crlf(data: bytes) -> None:
    lf = data.count(b"\n")
    assert transport._normalized(data) == (data.count(b"\r\n") == lf == data.count(b"\r"))


def parse_reply_reference(buffer: bytearray) -> tuple[int, str] | None:
    """The parser before replies were read in place (one list and one cut per reply)."""
    offset, code, lines = 0, -1, []
    while True:
        end = buffer.find(b"\n", offset)
        if end == -1:
            return None
        line = bytes(buffer[offset:end + 1])
        offset = end + 1
        try:
            code = int(line[:3])
        except ValueError:
            raise ValueError(f"malformed SMTP reply line {line[:80]!r}") from None
        lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            del buffer[:offset]
            return code, b"\n".join(lines).decode("utf-8", "surrogateescape")


REPLY_LINES = st.lists(st.sampled_from([
    b"250 ok\r\n", b"250-first\r\n", b"250-SIZE 1000 \r\n", b"354 go ahead\r\n", b"250\r\n",
    b"550 5.1.1 \xff no\r\n", b"25", b"\r\n", b"xyz bad\r\n", b"220 \t spaced \t\r\n", b"250 x",
]), max_size=8).map(b"".join)


def replies_of(parse, data: bytes) -> tuple[list[object], bytes]:
    buffer, found = bytearray(data), []
    while True:
        try:
            reply = parse(buffer)
        except ValueError as exc:
            found.append(str(exc))
            break
        if reply is None:
            break
        found.append(reply)
    return found, bytes(buffer)


@given(REPLY_LINES)
@example(b"250-a\r\n250-b\r\n250 c\r\n354 go\r\n")
def test_replies_parsed_in_place_match_the_reference_parser(data: bytes) -> None:
    assert replies_of(_pipeline.parse_reply, data) == replies_of(parse_reply_reference, data)


@given(REPLY_LINES)
def test_a_reply_read_at_an_offset_leaves_the_buffer_alone(data: bytes) -> None:
    buffer, offset, found = bytearray(data), 0, []
    try:
        while (reply := _pipeline._reply_at(buffer, offset)) is not None:
            found.append(reply[:2])
            offset = reply[2]
    except ValueError as exc:
        found.append(str(exc))
    assert bytes(buffer) == data
    expected, rest = replies_of(parse_reply_reference, data)
    assert found == expected
    if not (found and isinstance(found[-1], str)):
        assert data[offset:] == rest


def test_replies_are_aiosmtplibs_own_type() -> None:
    assert _pipeline._PLAIN_RESPONSE  # else every reply takes the slower constructor
    reply = tuple.__new__(_pipeline.SMTPResponse, (250, "ok"))
    assert reply == _pipeline.SMTPResponse(250, "ok") and reply.code == 250 and str(reply) == "250 ok"


@pytest.mark.parametrize("accepted", [(), ("a@example.test",), ("a@example.test", "b@example.test")])
def test_the_response_of_a_sent_message_is_what_the_constructor_makes(accepted) -> None:
    fast = Response.sent("<id@example.test>", 0.25, accepted)
    slow = Response(exitcode=ExitCode.SENT, message_id="<id@example.test>", elapsed=0.25,
                    accepted=accepted)
    assert fast == slow and repr(fast) == repr(slow) and fast.to_dict() == slow.to_dict()
    assert list(vars(fast).items()) == list(vars(slow).items())
    assert type(fast.exitcode) is ExitCode and fast.ok and fast.state == "sent"
    assert fast.refused is not Response.sent(None, 0.0, ()).refused  # not shared between responses


def test_a_finished_send_still_wakes_a_thread_waiting_for_the_send_log() -> None:
    """A finished send notifies only when a thread waits (``SendLog.changed``): one that
    waits is woken at once, not at the end of its timeout."""
    log = SendLog()
    record = log.add(SendRecord("s", ("a@example.test",), "<id@example.test>"))
    waited: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        assert log.wait(timeout=5) == []
        waited.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    while not log._waiting:  # the waiter is counted (then it waits, or sees the record done)
        time.sleep(0.01)
    time.sleep(0.1)
    record.finish(Response.sent("<id@example.test>", 0.1, ("a@example.test",)))
    waiter.join(20)
    assert waited and waited[0] < 4 and record.status == "sent"
    assert log._waiting == 0
