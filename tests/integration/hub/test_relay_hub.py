"""The relay registry in a running hub: satellites are stdlib XML-RPC servers on
127.0.4.2-4 (threads in this test), calling the hub on 127.0.4.1 from their own address."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import queue
import threading
import xmlrpc.client
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from xmlrpc.server import SimpleXMLRPCServer

import httpx
import pytest

from smartget.hub.app import Hub, HubSettings, running
from smartget.hub.relay import RelaySettings

HUB_IP = "127.0.4.1"
SAT_IPS = ("127.0.4.2", "127.0.4.3", "127.0.4.4")
WAIT = 10.0  # the deadline of every wait in these tests


class BoundTransport(xmlrpc.client.Transport):
    """The stdlib transport, calling from a chosen source address (the hub keys
    satellites by the caller's address)."""

    def __init__(self, source_ip: str) -> None:
        super().__init__()
        self.source_ip = source_ip

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, _ = self.get_host_info(host)
        conn = http.client.HTTPConnection(chost, timeout=WAIT, source_address=(self.source_ip, 0))
        self._connection = host, conn
        return conn


class FakeSatellite:
    """A co2 satellite: notify(dict) and ping(dict) served by SimpleXMLRPCServer."""

    def __init__(self, ip: str, notify_pass: str) -> None:
        self.ip = ip
        self.notify_pass = notify_pass
        self.notified: queue.Queue[dict[str, Any]] = queue.Queue()
        self.pinged = threading.Event()
        self.server = SimpleXMLRPCServer((ip, 0), logRequests=False, allow_none=True)
        self.server.register_function(self._notify, "notify")
        self.server.register_function(self._ping, "ping")
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.host_id = ""

    def _notify(self, params: dict[str, Any]) -> str:
        self.notified.put(params)
        return "OK"

    def _ping(self, params: dict[str, Any]) -> str:
        self.pinged.set()
        return "pong"

    def proxy(self, hub: Hub) -> xmlrpc.client.ServerProxy:
        # With the hub's token, as satellites of a relay that requires it (the default).
        url = hub.http_url.replace("http://", f"http://relay:{hub.token}@")
        return xmlrpc.client.ServerProxy(
            f"{url}/RPC2", transport=BoundTransport(self.ip), allow_none=True
        )

    async def call(self, hub: Hub, method: str, *params: Any) -> Any:
        def do() -> Any:
            with self.proxy(hub) as proxy:
                return getattr(proxy, method)(*params)

        return await asyncio.to_thread(do)

    async def register(self, hub: Hub) -> str:
        self.host_id = await self.call(
            hub,
            "relay.register",
            {
                "port": self.port,
                "nick": f"sat-{self.ip}",
                "plugins": ["chat"],
                "notify_pass": self.notify_pass,
            },
        )
        return self.host_id

    async def next_notify(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.notified.get, timeout=WAIT)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(WAIT)
        self.server.server_close()


@pytest.fixture
def satellites() -> Iterator[list[FakeSatellite]]:
    sats = [FakeSatellite(ip, f"pass-{n}") for n, ip in enumerate(SAT_IPS)]
    yield sats
    for sat in sats:
        sat.stop()


def settings(data_dir: Path, **relay: Any) -> HubSettings:
    defaults: dict[str, Any] = {
        "ping_interval": 3600.0,  # pinged by hand, except in the pinger test
        "ping_timeout": 2.0,
        "notify_timeout": 2.0,
        "drain_timeout": 2.0,
    }
    return HubSettings(
        data_dir=data_dir,
        listen=(HUB_IP, 0),
        http=(HUB_IP, 0),
        token="test-token",
        relay=RelaySettings(**{**defaults, **relay}),
    )


@contextlib.asynccontextmanager
async def hub_at(data_dir: Path, **relay: Any) -> AsyncIterator[Hub]:
    async with asyncio.timeout(30), running(settings(data_dir, **relay)) as hub:
        yield hub


async def idle(hub: Hub) -> None:
    async with asyncio.timeout(WAIT):
        await hub.relay.wait_idle()


@pytest.mark.asyncio
async def test_register_relay_notify_and_statistics(
    tmp_path: Path, satellites: list[FakeSatellite]
) -> None:
    a, b, c = satellites
    async with hub_at(tmp_path) as hub:
        for sat in satellites:
            assert await sat.register(hub) == f"{sat.ip}:{sat.port}"
        assert await a.call(hub, "relay.get_satellites") == [s.host_id for s in satellites]
        assert await a.call(hub, "co2.get_num_satellites", {}) == 3

        data = {"text": "hello", "n": [1, 2, 3]}
        assert await a.call(hub, "relay.relay", {"host_id": a.host_id, "data": data}) == "OK"
        for sat in (b, c):
            got = await sat.next_notify()
            assert got == {"host_id": a.host_id, "data": data, "notify_pass": sat.notify_pass}
        await idle(hub)
        assert a.notified.empty()  # never to the sender

        props = await b.call(hub, "relay.get_satellite_props", {"host_id": a.host_id})
        assert props["send_count"] == 1
        assert props["nick"] == f"sat-{a.ip}"
        assert props["addr"] == [a.ip, a.port]
        assert isinstance(props["send_time"], xmlrpc.client.DateTime)
        for sat in (b, c):
            raw = await a.call(hub, "relay.get_satellite_props_raw", {"host_id": sat.host_id})
            assert (raw["recv_count"], raw["notify_fails"]) == (1, 0)
            assert raw["recv_time"] > 0

        await hub.relay.ping_all()
        raw = await a.call(hub, "relay.get_satellite_props_raw", {"host_id": b.host_id})
        assert raw["ping_count"] == 1
        assert 0 <= raw["ping_current"] < WAIT * 1000
        assert raw["ping_min"] == raw["ping_max"] == raw["ping_avg"] == raw["ping_current"]
        stats = hub.relay.statistics()
        assert (stats["relayed"], stats["notify_ok"], stats["ping_ok"]) == (1, 2, 3)


@pytest.mark.asyncio
async def test_only_a_satellites_own_address_may_act_for_it(
    tmp_path: Path, satellites: list[FakeSatellite]
) -> None:
    a, b, _ = satellites
    async with hub_at(tmp_path) as hub:
        await a.register(hub)
        await b.register(hub)
        for method, params in (
            ("relay.deregister", {"host_id": a.host_id}),
            ("relay.relay", {"host_id": a.host_id, "data": "spoofed"}),
        ):
            with pytest.raises(xmlrpc.client.Fault, match=f"only {a.ip} may") as info:
                await b.call(hub, method, params)
            assert info.value.faultCode == -32500
        assert await a.call(hub, "relay.deregister", {"host_id": a.host_id}) == "OK"
        assert await b.call(hub, "relay.get_satellites") == [b.host_id]


@pytest.mark.asyncio
async def test_max_satellites(tmp_path: Path, satellites: list[FakeSatellite]) -> None:
    a, b, c = satellites
    async with hub_at(tmp_path, max_satellites=2) as hub:
        await a.register(hub)
        await b.register(hub)
        with pytest.raises(xmlrpc.client.Fault, match="relay is full: 2 of 2"):
            await c.register(hub)
        assert await c.call(hub, "relay.get_max_satellites") == 2


@pytest.mark.asyncio
async def test_dead_satellite_is_counted_never_holds_up_others_and_is_dropped(
    tmp_path: Path, satellites: list[FakeSatellite]
) -> None:
    a, b, c = satellites
    async with hub_at(tmp_path, ping_fails=2) as hub:
        for sat in satellites:
            await sat.register(hub)
        c.stop()  # dead: connections refused
        for n in range(3):
            await a.call(hub, "relay.relay", {"host_id": a.host_id, "data": n})
        assert [(await b.next_notify())["data"] for _ in range(3)] == [0, 1, 2]
        await idle(hub)
        raw = await a.call(hub, "relay.get_satellite_props_raw", {"host_id": c.host_id})
        assert (raw["notify_fails"], raw["recv_count"]) == (3, 0)

        await hub.relay.ping_all()
        raw = await a.call(hub, "relay.get_satellite_props_raw", {"host_id": c.host_id})
        assert (raw["ping_fails"], raw["ping_current"]) == (1, -1.0)
        await hub.relay.ping_all()
        assert await a.call(hub, "relay.get_satellites") == [a.host_id, b.host_id]
        assert hub.relay.statistics()["dropped"] == 1
        with pytest.raises(xmlrpc.client.Fault, match="no satellite"):
            await a.call(hub, "relay.get_satellite_props", {"host_id": c.host_id})


@pytest.mark.asyncio
async def test_the_pinger_pings_on_its_own(tmp_path: Path, satellites: list[FakeSatellite]) -> None:
    a = satellites[0]
    async with hub_at(tmp_path, ping_interval=0.1) as hub:
        await a.register(hub)
        assert await asyncio.to_thread(a.pinged.wait, WAIT)


@pytest.mark.asyncio
async def test_registrations_survive_a_restart(
    tmp_path: Path, satellites: list[FakeSatellite]
) -> None:
    a, b, c = satellites
    async with hub_at(tmp_path) as hub:
        for sat in satellites:
            await sat.register(hub)
        await a.call(hub, "relay.relay", {"host_id": a.host_id, "data": "before"})
        await b.next_notify()
        await c.next_notify()
        await idle(hub)
        ctime = await a.call(hub, "relay.get_satellite_ctime", {"host_id": a.host_id})
    async with hub_at(tmp_path) as hub:  # a new hub on a new port, same store
        assert await a.call(hub, "relay.get_satellites") == [s.host_id for s in satellites]
        assert await a.call(hub, "relay.get_satellite_ctime", {"host_id": a.host_id}) == ctime
        raw = await a.call(hub, "relay.get_satellite_props_raw", {"host_id": a.host_id})
        assert raw["send_count"] == 1
        # no need to register again: relaying works at once
        await b.call(hub, "relay.relay", {"host_id": b.host_id, "data": "after"})
        assert (await a.next_notify())["data"] == "after"
        assert (await c.next_notify())["notify_pass"] == c.notify_pass


@pytest.mark.asyncio
async def test_limiter_under_a_flood_busy_but_nothing_queued_is_lost(
    tmp_path: Path, satellites: list[FakeSatellite]
) -> None:
    a, b, c = satellites
    async with hub_at(tmp_path, queue=5, rate=5.0) as hub:
        for sat in satellites:
            await sat.register(hub)

        def flood() -> tuple[list[int], list[xmlrpc.client.Fault]]:
            accepted, faults = [], []
            with a.proxy(hub) as proxy:
                for n in range(40):
                    try:
                        proxy.relay.relay({"host_id": a.host_id, "data": n})
                    except xmlrpc.client.Fault as fault:
                        faults.append(fault)
                    else:
                        accepted.append(n)
            return accepted, faults

        accepted, faults = await asyncio.to_thread(flood)
        assert faults, "the limiter never said busy"
        assert {f.faultCode for f in faults} == {-32400}
        assert "busy" in faults[0].faultString
        assert "--relay-queue" in faults[0].faultString
        assert len(accepted) >= 5
        for sat in (b, c):
            got = [(await sat.next_notify())["data"] for _ in accepted]
            assert got == accepted  # every accepted message, in order
        await idle(hub)
        assert b.notified.empty()
        raw = await a.call(hub, "relay.get_satellite_props_raw", {"host_id": a.host_id})
        assert raw["send_count"] == len(accepted)
        assert hub.relay.statistics()["busy"] == len(faults)


@pytest.mark.asyncio
async def test_introspection_over_the_wire(tmp_path: Path, satellites: list[FakeSatellite]) -> None:
    a = satellites[0]
    async with hub_at(tmp_path) as hub:
        names = await a.call(hub, "sys.listMethods")
        assert "relay.register" in names
        assert "co2.get_satellite" in names
        for name in names:
            assert "callable as:" in await a.call(hub, "sys.methodHelp", name)
            sig = await a.call(hub, "web.get_method_signature", name)
            assert "args" in sig
        props = await a.call(hub, "system.get_properties")
        assert set(props) >= {
            "co2_author",
            "kernel",
            "uptime",
            "operating_system",
            "maintainer",
            "start_time",
            "sw_platform",
            "hw_platform",
            "co2_version",
            "maintainer_email",
            "hardware",
            "plugins",
            "server_time",
            "processor",
        }
        assert await a.call(hub, "web.ping") == "OK"
        assert await a.call(hub, "test", {"x": [1]}) == {"x": [1]}


def _fault_of(response: httpx.Response) -> xmlrpc.client.Fault:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(response.content)
    return info.value


@pytest.mark.asyncio
async def test_bad_input_gets_a_fault_never_a_500(tmp_path: Path) -> None:
    async with (
        hub_at(tmp_path, max_request=64 * 1024, require_token=False) as hub,  # --relay-open
        httpx.AsyncClient(base_url=hub.http_url, trust_env=False, timeout=WAIT) as client,
    ):
        bodies = {
            b"<methodCall><methodName>x": -32700,
            b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aa">]><methodCall>'
            b"<methodName>&a;</methodName></methodCall>": -32700,
            xmlrpc.client.dumps(("wrong",), "relay.register").encode(): -32602,
            xmlrpc.client.dumps(({},), "relay.register").encode(): -32602,
            xmlrpc.client.dumps((), "no.such.method").encode(): -32601,
            b"x" * (100 * 1024): -32300,
            b"x" * (2 * 1024 * 1024): -32300,  # past the hub's generic 1 MiB limit too
        }
        for body, code in bodies.items():
            response = await client.post(
                "/RPC2", content=body, headers={"Content-Type": "text/xml"}
            )
            fault = _fault_of(response)
            assert fault.faultCode == code, (body[:60], fault)
            assert "Traceback" not in fault.faultString

        response = await client.post("/RPC2", content=b"x", headers={"Content-Encoding": "gzip"})
        assert "Content-Encoding" in _fault_of(response).faultString

        # the relay still works after all that, and the rest of the hub too
        ok = await client.post("/RPC2", content=xmlrpc.client.dumps((), "ping").encode())
        assert xmlrpc.client.loads(ok.content)[0] == ("OK",)
        assert (await client.get("/healthz")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert "smartget_relay_faults_total" in metrics
        assert "smartget_relay_satellites" in metrics


@pytest.mark.asyncio
async def test_the_token_is_required_by_default(tmp_path: Path) -> None:
    async with hub_at(tmp_path) as hub:
        host, port = hub.http_address

        def calls() -> tuple[str, Any]:
            with xmlrpc.client.ServerProxy(f"http://{host}:{port}/RPC2") as anon:
                try:
                    anon.ping()
                except xmlrpc.client.Fault as fault:
                    refused = fault.faultString
            with xmlrpc.client.ServerProxy(f"http://relay:{hub.token}@{host}:{port}/RPC2") as ok:
                return refused, ok.ping()

        refused, answer = await asyncio.to_thread(calls)
        assert "needs the hub's token" in refused
        assert answer == "OK"


@pytest.mark.asyncio
async def test_a_hanging_satellite_never_holds_up_the_others(
    tmp_path: Path, satellites: list[FakeSatellite]
) -> None:
    a, b, c = satellites
    release = threading.Event()

    def hang(params: dict[str, Any]) -> str:
        release.wait(WAIT)
        return "late"

    c.server.register_function(hang, "notify")
    try:
        async with hub_at(tmp_path, notify_timeout=0.5) as hub:
            for sat in satellites:
                await sat.register(hub)
            loop = asyncio.get_running_loop()
            start = loop.time()
            for n in range(3):
                await a.call(hub, "relay.relay", {"host_id": a.host_id, "data": n})
            assert [(await b.next_notify())["data"] for _ in range(3)] == [0, 1, 2]
            assert loop.time() - start < 0.5  # b did not wait for c's first timeout
            await idle(hub)  # c's three calls time out, one after the other
            raw = await a.call(hub, "relay.get_satellite_props_raw", {"host_id": c.host_id})
            assert (raw["notify_fails"], raw["recv_count"]) == (3, 0)
            raw = await a.call(hub, "relay.get_satellite_props_raw", {"host_id": b.host_id})
            assert (raw["notify_fails"], raw["recv_count"]) == (0, 3)
    finally:
        release.set()


@pytest.mark.asyncio
async def test_a_satellite_refusing_notify_is_counted(
    tmp_path: Path, satellites: list[FakeSatellite]
) -> None:
    a, b, _ = satellites

    def refuse(params: dict[str, Any]) -> str:
        raise ValueError("wrong notify_pass")

    b.server.register_function(refuse, "notify")
    async with hub_at(tmp_path) as hub:
        await a.register(hub)
        await b.register(hub)
        await a.call(hub, "relay.relay", {"host_id": a.host_id, "data": 1})
        await idle(hub)
        raw = await a.call(hub, "relay.get_satellite_props_raw", {"host_id": b.host_id})
        assert (raw["notify_fails"], raw["recv_count"]) == (1, 0)
        # a fault to a ping is an answer: the satellite is alive
        b.server.register_function(refuse, "ping")
        await hub.relay.ping_all()
        raw = await a.call(hub, "relay.get_satellite_props_raw", {"host_id": b.host_id})
        assert (raw["ping_fails"], raw["ping_count"]) == (0, 1)


@pytest.mark.asyncio
async def test_a_relay_migrates_its_satellites_by_co2_dump(
    tmp_path: Path, satellites: list[FakeSatellite]
) -> None:
    """Dump from one relay (on exit, and by API), import into another: relaying goes on."""
    a, b, _ = satellites
    dump = tmp_path / "satellites.xml"
    async with hub_at(tmp_path / "old", export_file=dump) as hub:
        for sat in (a, b):
            await sat.register(hub)
        async with httpx.AsyncClient(base_url=hub.http_url) as client:
            answer = await client.get(
                "/api/relay/dump", headers={"Authorization": "Bearer test-token"}
            )
            assert (await client.get("/api/relay/dump")).status_code == 401
        assert answer.status_code == 200
        assert b.notify_pass.encode() in answer.content
    assert dump.stat().st_mode & 0o777 == 0o600  # it holds every notify_pass
    async with hub_at(tmp_path / "new", import_file=dump) as hub:
        assert await a.call(hub, "relay.get_satellites") == [a.host_id, b.host_id]
        assert await a.call(hub, "relay.relay", {"host_id": a.host_id, "data": "moved"}) == "OK"
        got = await b.next_notify()
        assert got == {"host_id": a.host_id, "data": "moved", "notify_pass": b.notify_pass}


@pytest.mark.asyncio
async def test_one_address_cannot_fill_the_relay(tmp_path: Path) -> None:
    """Issue 12.10: one IP registered 100 satellites and locked the real ones out."""
    flooder = FakeSatellite(SAT_IPS[0], "x")
    try:
        async with hub_at(tmp_path, max_per_ip=3) as hub:
            for port in range(20001, 20004):
                await flooder.call(hub, "relay.register", {"port": port, "notify_pass": "x"})
            with pytest.raises(xmlrpc.client.Fault, match="already has 3 satellites"):
                await flooder.call(hub, "relay.register", {"port": 20004, "notify_pass": "x"})
            other = FakeSatellite(SAT_IPS[1], "y")
            try:
                assert await other.register(hub) == other.host_id
            finally:
                other.stop()
            # The store holding every notify_pass is its owner's only.
            assert (hub.store.path.stat().st_mode & 0o777) == 0o600
    finally:
        flooder.stop()
