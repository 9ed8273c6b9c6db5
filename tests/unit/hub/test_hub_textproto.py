"""The text protocol core: parsing, modes, limits, timers; hostile bytes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.errors import TextProtocolError
from smartget.hub import textproto as tp


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (b"`register 1234", tp.Register(1234)),
        (b"  `register 1234  ", tp.Register(1234)),
        (b"`deregister 1", tp.Deregister(1)),
        (b"`requestnodes 5", tp.RequestNodes(5)),
        (b"`requestnodes 5 1", tp.RequestNodes(5)),
        (b"`setstatus 1 2", tp.SetStatus(1, 2)),
        (b"`setstatus 7 0", tp.SetStatus(7, 0)),
        (b"`session", tp.StartSession()),
    ],
)
def test_parse(line: bytes, command: tp.Command) -> None:
    assert tp.parse_command(line) == command


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "empty command"),
        (b"register 1", "starts with a backtick"),
        (b"`", "unknown command"),
        (b"`fly 1", "unknown command `fly"),
        (b"`register", "usage: `register PORT"),
        (b"`register 1 2", "usage: `register PORT"),
        (b"`register 0", "PORT must be from 1 to 65535, got 0"),
        (b"`register 65536", "PORT must be from 1 to 65535"),
        (b"`register x", "PORT must be a whole number"),
        (b"`requestnodes 0", "N must be from 1 to 1000"),
        (b"`requestnodes 1 x", "LEGACY must be a whole number"),
        (b"`setstatus 1 -1", "STATUS must be from 0"),
        (b"`setstatus 0 1", "ID must be from 1"),
        (b"`setstatus 1", "usage: `setstatus ID STATUS"),
        (b"`register \xff", "only ASCII"),
        (b"`register " + b"9" * 30, "PORT must be a whole number"),
    ],
)
def test_parse_errors_say_why(line: bytes, reason: str) -> None:
    with pytest.raises(TextProtocolError, match=reason.replace("`", "`").replace("(", r"\(")):
        tp.parse_command(line)


def test_replies() -> None:
    assert tp.ok() == b"200 OK\r\n"
    assert tp.ok(["7"]) == b"200 OK\r\n7\r\n"
    assert tp.not_found() == b"404 NOT FOUND\r\n"
    assert tp.bad_request("a\r\nb") == b"400 BAD REQUEST\r\na  b\r\n"


def test_single_mode_reads_one_line_then_done() -> None:
    conn = tp.TextConnection(now=0)
    assert conn.receive_data(b"`regis", now=0) == []
    assert conn.receive_data(b"ter 5\r\n`register 6\n", now=1) == [tp.Register(5)]
    assert conn.done
    assert conn.receive_data(b"`register 7\n", now=1) == []


def test_single_mode_eof_ends_the_line() -> None:
    conn = tp.TextConnection(now=0)
    assert conn.receive_data(b"`requestnodes 2", now=0) == []
    assert conn.receive_eof(now=0) == [tp.RequestNodes(2)]
    assert conn.done


def test_empty_connection_gets_an_answer() -> None:
    conn = tp.TextConnection(now=0)
    assert conn.receive_eof(now=0) == [
        tp.BadRequest("empty command; expected `register, `deregister, ...")
    ]


def test_session_mode_pipelines_and_survives_errors() -> None:
    conn = tp.TextConnection(now=0)
    events = conn.receive_data(b"`session\r\n`register 1\n\n`bogus\n`setstatus 1 3\n`sess", now=0)
    assert events[0] == tp.StartSession()
    assert events[1] == tp.Register(1)
    assert isinstance(events[2], tp.BadRequest)
    assert events[3] == tp.SetStatus(1, 3)
    assert not conn.done
    assert conn.receive_data(b"ion\n", now=0) == [tp.BadRequest("already in session mode")]
    assert conn.receive_eof(now=0) == []
    assert conn.done


def test_long_line_is_fatal() -> None:
    conn = tp.TextConnection(now=0)
    events = conn.receive_data(b"`register " + b"1" * 2000, now=0)
    assert len(events) == 1
    assert isinstance(events[0], tp.BadRequest)
    assert events[0].reason.startswith("line longer than 1024 bytes: b'`register 1111")
    assert conn.done


def test_slow_line_times_out() -> None:
    conn = tp.TextConnection(now=100, line_timeout=5)
    conn.receive_data(b"`reg", now=100)
    assert conn.deadline() == 105
    assert conn.handle_timer(now=104) == []
    assert conn.handle_timer(now=105) == [tp.BadRequest("no complete line within 5 s")]
    assert conn.done
    assert conn.deadline() is None


def test_session_deadlines() -> None:
    conn = tp.TextConnection(now=0, line_timeout=5, idle_timeout=60)
    conn.receive_data(b"`session\n", now=1)
    assert conn.deadline() == 61
    conn.receive_data(b"`reg", now=10)
    assert conn.deadline() == 15
    conn.receive_data(b"ister 1\n", now=12)
    assert conn.deadline() == 72
    assert conn.handle_timer(now=72) == [tp.BadRequest("session idle for 60 s; closing")]


@settings(max_examples=400, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=12), eof=st.booleans())
def test_arbitrary_bytes_only_yield_events(chunks: list[bytes], eof: bool) -> None:
    conn = tp.TextConnection(now=0)
    events: list[object] = []
    for i, chunk in enumerate(chunks):
        events += conn.receive_data(chunk, now=float(i))
    if eof:
        events += conn.receive_eof(now=99)
    events += conn.handle_timer(now=1000)
    assert all(isinstance(e, (*tp.Command.__args__, tp.BadRequest)) for e in events)
    assert conn.done or not eof


@given(line=st.binary(max_size=1200))
def test_parse_command_raises_only_its_own_error(line: bytes) -> None:
    hint = "parsed"
    try:
        tp.parse_command(line)
    except TextProtocolError as exc:
        hint = exc.hint
    assert hint


@given(
    line=st.from_regex(
        rb"\A`(register|deregister|requestnodes|setstatus|session)( -?[0-9]{1,25}){0,3}\Z"
    )
)
def test_parse_command_grammar_near_misses(line: bytes) -> None:
    try:
        command = tp.parse_command(line)
    except TextProtocolError:
        return
    assert isinstance(command, tp.Command.__args__)
