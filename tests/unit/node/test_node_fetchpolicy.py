"""The fetch policy (issue 12, item 5): addresses in, decisions out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.errors import ConfigError
from smartget.node.fetchpolicy import FetchPolicy, parse_networks

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.9.9.9", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("fe80::1%eth0", "link-local"),
    ("fd00::1", "private"),
    ("100.64.0.1", "non-global"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ("192.0.2.10", "private"),  # documentation
]


@pytest.mark.parametrize(("address", "kind"), REFUSED)
def test_the_node_network_is_refused_by_default(address: str, kind: str) -> None:
    reason = FetchPolicy().refusal(address)
    assert reason is not None
    assert f"a {kind} address" in reason
    assert "--fetch-allow" in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_global_addresses_are_fetched_from(address: str) -> None:
    assert FetchPolicy().refusal(address) is None


def test_allowed_networks() -> None:
    policy = FetchPolicy.from_texts(["127.0.0.0/8", "10.1.0.0/16", "fd00::5"])
    assert policy.refusal("127.0.3.1") is None
    assert policy.refusal("::ffff:127.0.0.1") is None
    assert policy.refusal("10.1.200.1") is None
    assert policy.refusal("fd00::5") is None
    assert policy.refusal("10.2.0.1") is not None
    assert policy.refusal("fd00::6") is not None
    assert policy.refusal("::1") is not None  # IPv6 loopback is not 127/8
    assert "not an IP address" in (policy.refusal("localhost") or "")


@pytest.mark.parametrize("text", ["10.0.0.0/33", "nonsense", "", "1.2.3.4/8/9"])
def test_bad_networks_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--fetch-allow"):
        parse_networks([text])


@given(st.text(max_size=60))
def test_any_text_gets_a_decision_never_an_exception(text: str) -> None:
    result = FetchPolicy().refusal(text)
    assert result is None or isinstance(result, str)
