"""Process lifecycle shared by every service run in the foreground."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

__all__ = ["STOP_SIGNALS", "on_stop_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_stop_signals(callback: Callable[[int], None]) -> None:
    """Call ``callback(signum)`` in the running loop on SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, callback, sig)
