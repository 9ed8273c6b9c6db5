"""The relay's durable queue as pure logic: sequence numbers, per-recipient progress,
the rows handed to the store, restore after a crash (no sockets, no SQLite)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartget.hub.relay.outbox import Message, Outbox, OutboxChanges

A, B, C = "10.0.0.1:7", "10.0.0.2:7", "10.0.0.3:7"


def accept(box: Outbox, sender: str = A, data: object = 1) -> Message:
    return box.accept(sender, {"host_id": sender, "data": data}, [A, B, C], 100.0)


def test_accept_numbers_messages_and_skips_the_sender() -> None:
    box = Outbox(3, last_seq=41)
    first, second = accept(box), accept(box, B)
    assert (first.seq, second.seq) == (42, 43)
    assert first.pending == {B, C}
    assert second.pending == {A, C}
    assert (first.accepted, first.params["data"]) == (100.0, 1)
    assert not box.full
    accept(box)
    assert box.full  # the limiter's bound counts every live message
    assert [m.seq for m in box.messages()] == [42, 43, 44]


def test_a_message_finishes_once_dispatched_and_done_for_every_recipient() -> None:
    box = Outbox(10)
    msg = accept(box)
    box.done(msg, B)
    box.done(msg, C)
    assert msg.seq in box  # not dispatched yet: still live
    box.dispatched(msg)
    assert msg.finished
    assert msg.seq not in box
    assert len(box) == 0
    assert box.statistics()["finished"] == 1


def test_changes_insert_then_update_then_delete() -> None:
    box = Outbox(10)
    msg = accept(box)
    box.done(msg, B)  # before its row was handed over: the insert carries it
    changes = box.drain_changes()
    assert [m.seq for m in changes.inserts] == [msg.seq]
    assert changes.inserts[0].pending == {C}
    assert (changes.updates, changes.deletes) == ([], [])
    assert not box.drain_changes()

    box.dispatched(msg)
    assert not box.drain_changes()  # nothing to write: C still waits
    other = accept(box)
    box.drain_changes()
    box.dispatched(other)
    box.done(other, B)
    box.done(msg, C)  # msg finished
    changes = box.drain_changes()
    assert changes.updates == [(other.seq, [C])]
    assert changes.deletes == [msg.seq]


def test_a_message_finished_before_its_row_was_written_is_never_written() -> None:
    box = Outbox(10)
    msg = accept(box)
    box.discard(msg)  # e.g. its commit failed
    assert len(box) == 0
    assert not box.drain_changes()


def test_dispatching_a_message_nobody_is_left_for_finishes_it() -> None:
    box = Outbox(10)
    msg = box.accept(A, {"data": 1}, [A], 0.0)  # the sender alone is registered
    assert msg.pending == set()
    box.drain_changes()
    box.dispatched(msg)
    assert box.drain_changes().deletes == [msg.seq]


def test_forget_marks_a_satellite_done_with_everything() -> None:
    box = Outbox(10)
    msgs = [accept(box) for _ in range(3)]
    box.drain_changes()
    for msg in msgs[:2]:
        box.dispatched(msg)
    box.done(msgs[0], C)
    box.forget(B)
    assert [m.seq for m in box.messages()] == [msgs[1].seq, msgs[2].seq]
    changes = box.drain_changes()
    assert changes.deletes == [msgs[0].seq]
    assert changes.updates == [(msgs[1].seq, [C]), (msgs[2].seq, [C])]


def test_restore_keeps_order_and_only_recipients_still_registered() -> None:
    rows = [
        Message(9, A, {"data": 9}, 1.0, {B}),  # B left while the hub was down
        Message(5, A, {"data": 5}, 1.0, {B, C}),
        Message(7, B, {"data": 7}, 1.0, {C}),
    ]
    box = Outbox(2)
    again = box.restore(rows, [A, C])
    assert [m.seq for m in again] == [5, 7]
    assert again[0].pending == {C}
    assert box.last_seq == 9
    assert accept(box).seq == 10
    assert box.full  # more than the limit may come back; busy until they go out
    changes = box.drain_changes()
    assert changes.deletes == [9]
    assert changes.updates == [(5, [C])]
    assert [m.seq for m in changes.inserts] == [10]
    assert box.statistics()["restored"] == 2


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        Outbox(0)


# Every operation the driver may do, in any order: the rows written always mirror the
# live messages (what a restart would load is exactly what is still owed).
OPS = st.lists(
    st.tuples(
        st.sampled_from(["accept", "dispatch", "done", "forget", "discard", "drain"]),
        st.integers(0, 20),
        st.sampled_from([A, B, C]),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_rows_written_mirror_the_live_messages(ops: list[tuple[str, int, str]]) -> None:
    box = Outbox(8)
    table: dict[int, set[str]] = {}

    def apply(changes: OutboxChanges) -> None:
        for msg in changes.inserts:
            assert msg.seq not in table
            table[msg.seq] = set(msg.pending)
        for seq, pending in changes.updates:
            assert seq in table
            table[seq] = set(pending)
        for seq in changes.deletes:
            del table[seq]

    seqs: list[int] = []
    for op, pick, host in ops:
        live = box.messages()
        msg = live[pick % len(live)] if live else None
        if op == "accept" and not box.full:
            seqs.append(box.accept(host, {}, [A, B, C], 0.0).seq)
        elif op == "dispatch" and msg is not None and not msg.dispatched:
            box.dispatched(msg)
        elif op == "done" and msg is not None:
            box.done(msg, host)
        elif op == "forget":
            box.forget(host)
        elif op == "discard" and msg is not None:
            box.discard(msg)
        elif op == "drain":
            apply(box.drain_changes())
        assert len(box) <= box.limit
    apply(box.drain_changes())
    assert table == {m.seq: m.pending for m in box.messages()}
    assert seqs == sorted(set(seqs))  # increasing, never reused
