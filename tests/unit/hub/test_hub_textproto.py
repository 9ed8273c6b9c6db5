"""The text protocol core: parsing, modes, limits, timers; hostile bytes."""

import itertools

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
        (b"`setstatus 7 -1", tp.SetStatus(7, -1)),  # a node declaring itself a zombie
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
        (b"`setstatus 1 -2", "STATUS must be from -1"),
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


def test_a_whole_command_without_line_end_is_answered_once_the_client_is_quiet() -> None:
    """The original clients send `register 4321 with no line end and wait (issue 17)."""
    conn = tp.TextConnection(now=0, line_timeout=5, quiet=0.05)
    assert conn.receive_data(b"`register 43", now=1) == []
    assert conn.deadline() == pytest.approx(1.05)
    # More bytes within the quiet period: the command was not whole yet.
    assert conn.receive_data(b"21", now=1.03) == []
    assert conn.handle_timer(now=1.05) == []
    assert conn.deadline() == pytest.approx(1.08)
    assert conn.handle_timer(now=1.08) == [tp.Register(4321)]
    assert conn.done


def test_a_partial_command_waits_for_the_rest_or_the_line_timeout() -> None:
    conn = tp.TextConnection(now=0, line_timeout=5, quiet=0.05)
    assert conn.receive_data(b"`regis", now=0) == []
    assert conn.deadline() == 5  # no whole command: only the line timeout
    assert conn.receive_data(b"ter 7", now=2) == []
    assert conn.deadline() == pytest.approx(2.05)
    assert conn.handle_timer(now=2.05) == [tp.Register(7)]


def test_garbage_without_line_end_keeps_the_line_timeout() -> None:
    conn = tp.TextConnection(now=0, line_timeout=5, quiet=0.05)
    assert conn.receive_data(b"`fly 1", now=0) == []
    assert conn.deadline() == 5
    assert conn.handle_timer(now=5) == [tp.BadRequest("no complete line within 5 s")]


def test_session_without_line_end_starts_a_session() -> None:
    conn = tp.TextConnection(now=0, quiet=0.05)
    assert conn.receive_data(b"`session", now=0) == []
    assert conn.handle_timer(now=0.05) == [tp.StartSession()]
    assert conn.mode is tp.Mode.SESSION
    assert conn.receive_data(b"`setstatus 1 2\n", now=0.1) == [tp.SetStatus(1, 2)]


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


def test_blank_after_backtick_and_session_again() -> None:
    assert tp.parse_command(b"` register 7") == tp.Register(7)
    assert tp.parse_command(b"`   setstatus 1 2") == tp.SetStatus(1, 2)
    conn = tp.TextConnection(now=0)
    events = conn.receive_data(
        b"`session\n`session\n`session 1\n` session\n`register 5\xff\n` register 7\r\n", now=0
    )
    assert events == [
        tp.StartSession(),
        tp.BadRequest("already in session mode"),
        tp.BadRequest("usage: `session (got 1 arguments)"),
        tp.BadRequest("already in session mode"),
        tp.BadRequest("only ASCII is allowed: b'`register 5\\xff'"),
        tp.Register(7),
    ]
    assert not conn.done


# Lines a session may see: commands, near misses, blanks, garbage, CR, non-ASCII, lines
# at and over the 1 KiB limit.
_LINE = st.one_of(
    st.from_regex(
        rb"\A ?` ?(register|deregister|requestnodes|setstatus|session|fly)"
        rb"( {1,2}-?[0-9]{1,21}){0,3} ?\r?\Z"
    ),
    st.sampled_from([b"", b"\r", b" \t", b"`", b"register 1", b"`setstatus 1 2\xc3\xa9"]),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.integers(1018, 1030).map(lambda n: b"`register " + b"1" * (n - 10)),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINE, max_size=12), cuts=st.lists(st.integers(0, 20_000), max_size=6))
def test_session_fast_path_gives_the_same_events_as_the_general_path(
    lines: list[bytes], cuts: list[int]
) -> None:
    """Whole lines in one read take the fast path; the same bytes cut anywhere do not."""
    data = b"\n".join(lines) + b"\n"

    def events_for(chunks: list[bytes]) -> tuple[list[tp.Event], bool]:
        conn = tp.TextConnection(now=0)
        assert conn.receive_data(b"`session\r\n", now=0) == [tp.StartSession()]
        events: list[tp.Event] = []
        for chunk in chunks:
            events += conn.receive_data(chunk, now=0)
        return events, conn.done

    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(edges)]
    one_read, one_done = events_for([data])
    cut_up, cut_done = events_for(chunks)
    byte_by_byte, bytes_done = events_for([data[i : i + 1] for i in range(len(data))])
    assert one_done == cut_done == bytes_done
    if not one_done:  # a fatal over-long line reads its reason from the partial line
        assert one_read == cut_up == byte_by_byte
    else:
        assert one_read[:-1] == cut_up[:-1] == byte_by_byte[:-1]
        assert all(
            isinstance(e[-1], tp.BadRequest) and e[-1].reason.startswith("line longer than")
            for e in (one_read, cut_up, byte_by_byte)
        )


def test_session_deadline_moves_only_with_a_partial_line() -> None:
    """The driver re-arms its timer only while partial_since is set: check that contract."""
    conn = tp.TextConnection(now=0, line_timeout=5, idle_timeout=60)
    conn.receive_data(b"`session\n", now=1)
    assert conn.partial_since is None
    conn.receive_data(b"`setstatus 1 2\n", now=2)
    assert (conn.partial_since, conn.deadline()) == (None, 62)
    conn.receive_data(b"`setstatus 1 2\n`setst", now=3)
    assert (conn.partial_since, conn.deadline()) == (3, 8)
    conn.receive_data(b"atus 1 2\n", now=4)
    assert (conn.partial_since, conn.deadline()) == (None, 64)
