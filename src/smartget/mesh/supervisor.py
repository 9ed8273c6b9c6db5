"""``smartget mesh supervise -- COMMAND``: MSW's main.py, without a shell.

Seed 001 ("main.py"): a guardian runs the main program and restarts it whenever it exits
with status 0 (the update app exits 0 to get its new code loaded). Any other status
stops the supervisor with that status. SIGINT and SIGTERM are passed to the child and
end supervision. Between restarts it waits ``delay`` seconds so a program that exits 0
at once cannot spin a core.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from types import FrameType

__all__ = ["supervise"]

log = logging.getLogger(__name__)


def supervise(
    argv: Sequence[str],
    *,
    delay: float = 1.0,
    max_restarts: int | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> int:
    """Run ``argv`` until it exits non-zero (return that status) or a signal stops us."""
    if not argv:
        raise ValueError("supervise needs a command to run")
    stopping = threading.Event()
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if child and child[-1].poll() is None:
            child[-1].send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    restarts = 0
    try:
        while True:
            try:
                proc = subprocess.Popen(list(argv))
            except OSError as exc:
                log.error("cannot start %s: %s", argv[0], exc.strerror)
                return 127
            child.append(proc)
            if on_start is not None:
                on_start(proc)
            status = proc.wait()
            child.clear()
            if stopping.is_set():
                return status
            if status != 0:
                log.info("%s exited with status %d; not restarting", argv[0], status)
                return status
            if max_restarts is not None and restarts >= max_restarts:
                return 0
            restarts += 1
            log.info("%s exited with status 0; restarting (#%d)", argv[0], restarts)
            if stopping.wait(delay):
                return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
