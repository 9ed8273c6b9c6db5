"""The packets of the ``transcode`` mesh app, built and read in one place (sans-IO).

Seed 001 (plugins/ffmpeg.py): "对分发主机启动server模式并指定文件名，对转码主机启动worker模式并指定
分发主机的id" — the distributing node runs the server role on a file, transcoding nodes
run the worker role naming the server's id. Both are the app ``transcode``:

=========================  ==============================================================
worker -> server           meaning
=========================  ==============================================================
``post``  ``op: ask``      give me a task (one packet per free slot)
``post``  ``op: alive``    still working on ``tasks: 3,4`` of ``job`` (every heartbeat)
``file``  ``op: result``   the transcoded ``task`` of ``job`` (a file Datapack)
``post``  ``op: failed``   ffmpeg failed on ``task``; ``reason`` says why
=========================  ==============================================================

=========================  ==============================================================
server -> worker           meaning
=========================  ==============================================================
``file``  ``op: task``     the segment of ``task`` (``kind`` video|audio), the job's
                           ``params`` (JSON) and ``re: <ask flag>``
``reply`` ``op: wait``     nothing pending now; ask again after ``retry`` seconds
``reply`` ``op: done``     the job is finished (or failed); ask again later
``reply`` ``op: ack``      a result was ``accepted: yes|no`` (``reason``); drop the file
``post``  ``op: offer``    to every direct peer: workers with no fixed server take the job
=========================  ==============================================================

Header values from a peer are read with :func:`header_int` and :func:`header_float`,
which never raise: a malformed value is treated as absent.
"""

from __future__ import annotations

from collections.abc import Mapping

from smartget.mesh.datapack import Datapack

__all__ = [
    "APP_NAME",
    "alive",
    "ask",
    "failed",
    "header_float",
    "header_int",
    "offer",
    "one_line",
    "task_head",
]

APP_NAME = "transcode"
MAX_REASON = 1000  # characters of an error message carried in a header


def ask(server: str) -> Datapack:
    return Datapack("post", APP_NAME, {"to": server, "op": "ask"})


def alive(server: str, job: str, tasks: list[int]) -> Datapack:
    head = {"to": server, "op": "alive", "job": job, "tasks": ",".join(map(str, tasks))}
    return Datapack("post", APP_NAME, head)


def failed(server: str, job: str, task: int, reason: str) -> Datapack:
    head = {"to": server, "job": job, "task": str(task), "op": "failed"}
    return Datapack("post", APP_NAME, {**head, "reason": one_line(reason)})


def offer(job: str) -> Datapack:
    return Datapack("post", APP_NAME, {"to": "*", "op": "offer", "job": job})


def task_head(
    *,
    worker: str,
    job: str,
    task: int,
    handout: int,
    kind: str,
    suffix: str,
    sha256: str,
    params_json: str,
    lease_timeout: float,
    ask_flag: str,
) -> dict[str, str]:
    """The head of the file packet that hands ``task`` to ``worker``."""
    head = {
        "to": worker,
        "filename": f"transcode/{job}/{task}.{handout}{suffix}",
        "sha256": sha256,
        "op": "task",
        "job": job,
        "task": str(task),
        "kind": kind,
        "params": params_json,
        "timeout": f"{lease_timeout:g}",
    }
    if ask_flag:
        head["re"] = ask_flag
    return head


def header_int(head: Mapping[str, str], key: str) -> int:
    """``head[key]`` as an int; -1 when absent or not a number."""
    try:
        return int(head.get(key) or "")
    except ValueError:
        return -1


def header_float(head: Mapping[str, str], key: str, default: float) -> float:
    """``head[key]`` as a non-negative float; ``default`` when absent, malformed or NaN."""
    try:
        value = float(head.get(key) or "")
    except ValueError:
        return default
    return value if value == value and value >= 0 else default  # not NaN


def one_line(text: str) -> str:
    """``text`` on one line (header values hold no line breaks), at most MAX_REASON long."""
    return " ".join(text.split())[:MAX_REASON]
