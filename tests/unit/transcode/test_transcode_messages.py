"""The transcode app's packets: built in one place, read without raising."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smartget.transcode import messages as msg


def test_packets_carry_what_the_other_role_reads() -> None:
    assert dict(msg.ask("srv").head) == {"to": "srv", "op": "ask"}
    assert msg.alive("srv", "j1", [3, 4]).head["tasks"] == "3,4"
    failed = msg.failed("srv", "j1", 2, "bad\nthings   happened")
    assert (failed.head["task"], failed.head["reason"]) == ("2", "bad things happened")
    common = {"worker": "w", "job": "j1", "kind": "video", "sha256": "0" * 64}
    head = msg.task_head(**common, task=5, handout=2, suffix=".mkv", params_json="{}",
                         lease_timeout=600.0, ask_flag="f")  # fmt: skip
    assert (head["filename"], head["timeout"], head["re"]) == ("transcode/j1/5.2.mkv", "600", "f")
    head = msg.task_head(**common, task=0, handout=1, suffix=".mka", params_json="{}",
                         lease_timeout=1.5, ask_flag="")  # fmt: skip
    assert (head["timeout"], "re" in head) == ("1.5", False)


@given(st.text(max_size=20))
def test_header_numbers_never_raise(value: str) -> None:
    assert isinstance(msg.header_int({"task": value}, "task"), int)
    got = msg.header_float({"retry": value}, "retry", 1.0)
    assert got == got
    assert got >= 0


def test_header_defaults() -> None:
    assert msg.header_int({}, "task") == -1
    assert msg.header_float({"retry": "nan"}, "retry", 1.0) == 1.0
    assert msg.header_float({"retry": "-3"}, "retry", 1.0) == 1.0
    assert msg.header_float({"retry": "0.5"}, "retry", 1.0) == 0.5
