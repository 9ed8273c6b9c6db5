"""run_service: the event loop a service runs on (uvloop unless asked otherwise)."""

from __future__ import annotations

import asyncio

import pytest

from smartget.errors import ConfigError
from smartget.lifecycle import EVENT_LOOP_ENV, run_service


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_a_service_runs_on_uvloop_by_default() -> None:
    assert run_service(_loop_module(), environ={}).startswith("uvloop")


def test_a_service_runs_on_asyncio_when_asked() -> None:
    assert run_service(_loop_module(), environ={EVENT_LOOP_ENV: "asyncio"}).startswith("asyncio")


def test_an_unknown_event_loop_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="SMARTGET_EVENT_LOOP='tokio': expected one of"):
        run_service(_loop_module(), environ={EVENT_LOOP_ENV: "tokio"})
