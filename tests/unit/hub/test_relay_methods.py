"""The relay's method table: aliases, parameter checks, introspection (no sockets)."""

from __future__ import annotations

import asyncio
import xmlrpc.client
from collections.abc import Awaitable
from typing import Any

import pytest

from smartget.hub.relay.core import (
    RelayBusyError,
    RelayFullError,
    RelayNotPermittedError,
    Satellite,
    SatelliteRegistry,
)
from smartget.hub.relay.http import caller_address
from smartget.hub.relay.methods import METHODS, Dispatcher
from smartget.hub.relay.xmlrpc import INVALID_PARAMS, METHOD_NOT_FOUND, XmlRpcError

# Every name the seed lists under "callable as" (co2.co2_get_method_names as written).
SEED_NAMES = (
    "co2.get_method_help",
    "sys.methodHelp",
    "web.get_method_help",
    "co2.co2_get_method_names",
    "sys.listMethods",
    "web.get_method_names",
    "co2.get_method_signature",
    "sys.methodSignature",
    "web.get_method_signature",
    "relay.get_num_satellites",
    "co2.get_num_satellites",
    "web.get_num_satellites",
    "relay.get_satellite_props",
    "co2.get_satellite_props",
    "web.get_satellite_props",
    "co2.get_satellite",
    "relay.get_satellite_ctime",
    "co2.get_satellite_ctime",
    "web.get_satellite_ctime",
    "relay.get_satellites",
    "co2.get_satellites",
    "web.get_satellites",
    "relay.deregister",
    "relay.get_max_satellites",
    "relay.get_satellite_props_raw",
    "relay.register",
    "relay.relay",
    "system.get_properties",
    "web.get_properties",
    "ping",
    "web.ping",
    "test",
    "web.test",
    "call_method",
    "web.call_method",
)


class FakeBackend:
    def __init__(self, max_satellites: int = 5, queue: int = 10) -> None:
        self.registry = SatelliteRegistry(max_satellites=max_satellites)
        self.queued: list[tuple[str, dict[str, Any]]] = []
        self.saves = 0
        self.queue = queue
        self.forgotten: list[str] = []

    def wall(self) -> float:
        return 1_000_000.0

    async def save(self) -> None:
        self.saves += 1

    async def register(
        self, ip: str, port: int, *, nick: str, plugins: list[str], notify_pass: str
    ) -> Satellite:
        sat = self.registry.register(
            ip, port, self.wall(), nick=nick, plugins=plugins, notify_pass=notify_pass
        )
        await self.save()
        return sat

    async def deregister(self, host_id: str, caller_ip: str | None) -> Satellite:
        sat = self.registry.deregister(host_id, caller_ip)
        self.forget(sat)
        await self.save()
        return sat

    def enqueue(self, sender: Satellite, message: dict[str, Any]) -> Awaitable[None]:
        if len(self.queued) >= self.queue:
            raise RelayBusyError("the relay is busy")
        self.queued.append((sender.host_id, message))
        return self._saved()

    async def _saved(self) -> None:
        self.saves += 1

    def forget(self, sat: Satellite) -> None:
        self.forgotten.append(sat.host_id)

    def properties(self) -> dict[str, Any]:
        return {"co2_version": "x"}


def run(disp: Dispatcher, name: str, *params: Any, caller: str | None = "10.0.0.1") -> Any:
    return asyncio.run(disp.call(name, params, caller))


@pytest.fixture
def disp() -> Dispatcher:
    return Dispatcher(FakeBackend())


def test_every_seed_name_is_served(disp: Dispatcher) -> None:
    listed = run(disp, "sys.listMethods")
    assert set(SEED_NAMES) <= set(listed)
    assert listed == sorted(listed)
    assert run(disp, "system.listMethods") == listed


def test_every_method_has_help_and_signature(disp: Dispatcher) -> None:
    for name in run(disp, "sys.listMethods"):
        text = run(disp, "sys.methodHelp", name)
        assert "callable as:" in text
        assert name in text
        sig = run(disp, "co2.get_method_signature", {"method": name})
        assert set(sig) >= {"args", "args_d", "args_v", "args_kw"}
        assert sig["args"] in (["param_dict"], ["method_name"])
        xmlrpc.client.dumps((sig,), methodresponse=True)  # marshallable


def test_register_relay_deregister(disp: Dispatcher) -> None:
    backend: FakeBackend = disp.backend  # type: ignore[assignment]
    host_id = run(disp, "relay.register", {"port": 8000, "nick": "a", "notify_pass": "p"})
    assert host_id == "10.0.0.1:8000"
    assert backend.saves == 1
    assert run(disp, "relay.relay", {"host_id": host_id, "data": {"x": 1}}) == "OK"
    assert backend.queued == [(host_id, {"host_id": host_id, "data": {"x": 1}})]
    assert backend.saves == 2  # 'OK' waited for the message's commit
    props = run(disp, "co2.get_satellite", {"host_id": host_id})
    assert props["send_count"] == 1
    assert isinstance(props["send_time"], xmlrpc.client.DateTime)
    assert props["ping_current"] == -1.0
    assert "notify_pass" not in props
    raw = run(disp, "relay.get_satellite_props_raw", {"host_id": host_id})
    assert raw["send_time"] == 1_000_000.0
    assert run(disp, "web.get_satellite_ctime", {"host_id": host_id}) == 1_000_000.0
    assert run(disp, "web.get_num_satellites") == 1
    assert run(disp, "relay.get_satellites", {}) == [host_id]
    with pytest.raises(RelayNotPermittedError):
        run(disp, "relay.deregister", {"host_id": host_id}, caller="10.0.0.2")
    with pytest.raises(RelayNotPermittedError):
        run(disp, "relay.relay", {"host_id": host_id, "data": 1}, caller="10.0.0.2")
    assert run(disp, "relay.deregister", {"host_id": host_id}) == "OK"
    assert backend.forgotten == [host_id]
    assert run(disp, "co2.get_num_satellites") == 0


def test_full_and_busy() -> None:
    disp = Dispatcher(FakeBackend(max_satellites=1, queue=1))
    host_id = run(disp, "relay.register", {"port": 1})
    with pytest.raises(RelayFullError, match="1 of 1"):
        run(disp, "relay.register", {"port": 2})
    run(disp, "relay.relay", {"host_id": host_id, "data": ""})
    with pytest.raises(RelayBusyError):
        run(disp, "relay.relay", {"host_id": host_id, "data": ""})
    # a busy refusal does not count as sent
    assert run(disp, "relay.get_satellite_props_raw", {"host_id": host_id})["send_count"] == 1


@pytest.mark.parametrize(
    ("name", "params", "words"),
    [
        ("relay.register", (), "takes one struct"),
        ("relay.register", ({"port": "80"},), "'port' must be"),
        ("relay.register", ({"port": True},), "'port' must be"),
        ("relay.register", ({},), "missing key 'port'"),
        ("relay.register", ({"port": 1, "plugins": [1]},), "'plugins'"),
        ("relay.register", ({"port": 1, "nick": "n" * 999},), "longer than"),
        ("relay.relay", ({"host_id": "10.0.0.1:1"},), "missing key 'data'"),
        ("relay.get_satellite_props", ({"host_id": 5},), "'host_id' must be"),
        ("relay.get_satellites", (1, 2), "takes one struct"),
        ("sys.methodHelp", (), "method name"),
        ("call_method", ({"method": "call_method"},), "cannot call itself"),
    ],
)
def test_bad_parameters_say_what_was_expected(
    disp: Dispatcher, name: str, params: tuple[Any, ...], words: str
) -> None:
    with pytest.raises(XmlRpcError, match=words) as info:
        run(disp, name, *params)
    assert info.value.code == INVALID_PARAMS


def test_unknown_method(disp: Dispatcher) -> None:
    with pytest.raises(XmlRpcError, match="no method 'nope'") as info:
        run(disp, "nope")
    assert info.value.code == METHOD_NOT_FOUND


def test_call_method_is_anonymous(disp: Dispatcher) -> None:
    assert run(disp, "call_method", {"method": "test", "params": {"a": 1}}) == {"a": 1}
    assert run(disp, "web.call_method", {"method": "ping"}) == "OK"
    with pytest.raises(RelayNotPermittedError, match="anonymous"):
        run(disp, "call_method", {"method": "relay.register", "params": {"port": 5}})


def test_method_table_is_consistent() -> None:
    names = [n for spec in METHODS for n in spec.names]
    assert len(names) == len(set(names))
    assert all(spec.help and spec.returns for spec in METHODS)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.4.2", "127.0.4.2"),
        ("::ffff:10.0.0.1", "10.0.0.1"),  # a dual-stack listener: same host_id as IPv4
        ("::1", "::1"),
        (None, None),
        ("", None),
    ],
)
def test_caller_address(host: str | None, expected: str | None) -> None:
    assert caller_address(host) == expected
