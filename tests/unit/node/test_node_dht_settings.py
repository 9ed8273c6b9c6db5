"""The node's DHT settings (issue 14): the default bootstrap and libtorrent's pack."""

from __future__ import annotations

from pathlib import Path

from smartget.node.engine import _dht_pack
from smartget.node.settings import HUB_DHT_PORT, EngineSettings, NodeSettings


def settings(**kw: object) -> NodeSettings:
    return NodeSettings(ip="10.0.0.2", zone="z", wwwroot=Path("w"), data_dir=Path("d"), **kw)  # type: ignore[arg-type]


def test_bootstrap_defaults_to_the_hubs_dht() -> None:
    assert settings().dht_bootstrap_nodes() == ()
    assert settings(hub=(("10.0.0.1", 20111),)).dht_bootstrap_nodes() == (("10.0.0.1", 20111),)
    by_http = settings(hub_http=("http://:tok@hub.lan:8200",))
    assert by_http.dht_bootstrap_nodes() == (("hub.lan", HUB_DHT_PORT),)
    named = settings(hub=(("10.0.0.1", 20111),), dht_bootstrap=(("10.0.0.9", 6881),))
    assert named.dht_bootstrap_nodes() == (("10.0.0.9", 6881),)
    assert named.engine_settings().dht_bootstrap == (("10.0.0.9", 6881),)


def test_libtorrent_dht_settings_for_a_fleet() -> None:
    pack = _dht_pack(EngineSettings(dht_bootstrap=(("10.0.0.1", 20110), ("10.0.0.3", 6881))))
    assert pack["enable_dht"] is True
    assert pack["dht_bootstrap_nodes"] == "10.0.0.1:20110,10.0.0.3:6881"  # never the public routers
    assert pack["dht_restrict_routing_ips"] is False
    assert pack["dht_restrict_search_ips"] is False
    assert _dht_pack(EngineSettings(dht=False)) == {"enable_dht": False}
