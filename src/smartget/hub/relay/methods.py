"""The relay's XML-RPC methods, their aliases, help and signatures (seed 004).

Each method is one row of :data:`METHODS`: its canonical name, the aliases the seed
lists under "callable as", the keys of the one dict it takes, and its help (the seed's
docstring). :class:`Dispatcher` checks the parameters, calls the backend and answers
the introspection calls (``sys.listMethods``, ``sys.methodHelp``,
``sys.methodSignature``) from the same table, so every name listed is callable and has
help and a signature.

Where the seed's own names disagree, both are served: it documents
``co2.co2_get_method_names`` for ``x_co2_get_method_names`` (so ``co2.get_method_names``
too) and ``system.get_properties`` for ``x_sys_get_properties`` (so
``sys.get_properties`` too). The usual ``system.listMethods``, ``system.methodHelp``
and ``system.methodSignature`` are served as well, for standard XML-RPC clients.
"""

from __future__ import annotations

import datetime
import xmlrpc.client
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from smartget.hub.relay.core import RelayNotPermittedError, Satellite, SatelliteRegistry
from smartget.hub.relay.xmlrpc import (
    INT_MAX,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    XmlRpcError,
)

__all__ = ["METHODS", "Backend", "Dispatcher", "MethodSpec", "to_datetime"]

MAX_NICK = 128
MAX_PASS = 256
MAX_PLUGINS = 64
MAX_PLUGIN_NAME = 128
MAX_HOST_ID = 300


class Backend(Protocol):
    """What the methods need from the relay service."""

    registry: SatelliteRegistry

    def wall(self) -> float: ...

    async def save(self) -> None: ...

    async def register(
        self, ip: str, port: int, *, nick: str, plugins: list[str], notify_pass: str
    ) -> Satellite:
        """Register (or refresh) the satellite at ip:port, durably (RelayFullError)."""
        ...

    async def deregister(self, host_id: str, caller_ip: str | None) -> Satellite:
        """Remove a satellite its own address asks to remove, durably."""
        ...

    def enqueue(self, sender: Satellite, message: dict[str, Any]) -> Awaitable[None]: ...

    def forget(self, sat: Satellite) -> None: ...

    def properties(self) -> dict[str, Any]: ...


Handler = Callable[["Dispatcher", dict[str, Any], str | None], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One XML-RPC method: names, what its dict holds, what it returns, its help."""

    name: str
    aliases: tuple[str, ...]
    handler: Handler
    help: str
    returns: str
    params: dict[str, str] = field(default_factory=dict)  # key -> type and meaning
    optional: bool = False  # the dict may be left out (seed: param_dict={})
    takes_name: bool = False  # takes a method name (a string) instead of a dict
    acts_for_caller: bool = False  # needs the caller's address (not via call_method)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def to_datetime(epoch: float) -> xmlrpc.client.DateTime:
    """Seconds since the epoch -> an XML-RPC dateTime.iso8601, in UTC."""
    return xmlrpc.client.DateTime(datetime.datetime.fromtimestamp(epoch, datetime.UTC))


def _int(value: int) -> int:
    return min(value, INT_MAX)


def _props(sat: Satellite) -> dict[str, Any]:
    """The seed's props: times as dates, ping times in ms."""
    props = _raw(sat)
    for key in ("ctime", "send_time", "recv_time"):
        props[key] = to_datetime(getattr(sat, key))
    return props


def _raw(sat: Satellite) -> dict[str, Any]:
    raw = sat.raw()
    for key, value in raw.items():
        if isinstance(value, int):
            raw[key] = _int(value)
    return raw


class Dispatcher:
    """Runs calls against a :class:`Backend`; raises XmlRpcError or RelayError."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.by_name: dict[str, MethodSpec] = {}
        for spec in METHODS:
            for name in spec.names:
                assert name not in self.by_name, name
                self.by_name[name] = spec

    def lookup(self, name: str) -> MethodSpec:
        spec = self.by_name.get(name)
        if spec is None:
            raise XmlRpcError(
                f"no method {name[:80]!r}: sys.listMethods lists the {len(self.by_name)} there are",
                METHOD_NOT_FOUND,
            )
        return spec

    async def call(self, name: str, params: tuple[Any, ...], caller_ip: str | None) -> Any:
        """Run ``name(*params)`` for a caller at ``caller_ip`` (None: anonymous)."""
        spec = self.lookup(name)
        if spec.acts_for_caller and caller_ip is None:
            raise RelayNotPermittedError(f"{name} acts for its caller: it cannot be anonymous")
        arg = _one_arg(spec, name, params)
        return await spec.handler(self, arg, caller_ip)

    def help(self, name: str) -> str:
        spec = self.lookup(name)
        keys = "".join(f"\n  {k}: {v}" for k, v in spec.params.items())
        takes = (
            "a method name (string)"
            if spec.takes_name
            else ("one struct" + (" (may be left out)" if spec.optional else ""))
        )
        return (
            f"{spec.help}\n\ntakes: {takes}{keys}\nreturns: {spec.returns}\n"
            f"callable as: {', '.join(spec.names)}"
        )

    def signature(self, name: str) -> dict[str, Any]:
        """The seed's signature dict (args, args_d, args_v, args_kw), plus ``params``
        (the keys of the struct) and ``returns``."""
        spec = self.lookup(name)
        arg = "method_name" if spec.takes_name else "param_dict"
        return {
            "args": [arg],
            "args_d": {arg: {}} if spec.optional else {},
            "args_v": [],
            "args_kw": [],
            "params": dict(spec.params),
            "returns": spec.returns,
        }


def _one_arg(spec: MethodSpec, name: str, params: tuple[Any, ...]) -> dict[str, Any]:
    if spec.takes_name:
        if len(params) == 1 and isinstance(params[0], str):
            return {"method": params[0]}
        if len(params) == 1 and isinstance(params[0], dict):
            return params[0]
        raise XmlRpcError(f"{name} takes one method name (a string)", INVALID_PARAMS)
    if not params and spec.optional:
        return {}
    if len(params) == 1 and isinstance(params[0], dict):
        return params[0]
    keys = ", ".join(spec.params) or "no keys"
    got = ", ".join(type(p).__name__ for p in params) or "nothing"
    raise XmlRpcError(
        f"{name} takes one struct ({keys}), got {got}",
        INVALID_PARAMS,
    )


_MISSING: Any = object()


def _get(
    d: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str, default: Any
) -> Any:
    value = d.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise XmlRpcError(f"missing key {key!r}: expected {what}", INVALID_PARAMS)
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise XmlRpcError(
            f"{key!r} must be {what}, got {type(value).__name__} {str(value)[:40]!r}",
            INVALID_PARAMS,
        )
    return value


def _text(d: dict[str, Any], key: str, limit: int, default: Any = _MISSING) -> str:
    value: str = _get(d, key, str, f"a string of at most {limit} characters", default)
    if len(value) > limit:
        raise XmlRpcError(f"{key!r} is longer than {limit} characters", INVALID_PARAMS)
    return value


def _host_id(d: dict[str, Any]) -> str:
    return _text(d, "host_id", MAX_HOST_ID)


def _method_name(d: dict[str, Any]) -> str:
    for key in ("method", "method_name", "name"):
        if isinstance(d.get(key), str):
            return str(d[key])
    raise XmlRpcError("expected a method name: a string, or a struct with 'method'", INVALID_PARAMS)


# -- handlers ------------------------------------------------------------------------


async def _register(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> str:
    assert caller is not None
    port: int = _get(d, "port", int, "the satellite's listening port (1-65535)", _MISSING)
    plugins = _get(d, "plugins", list, "a list of plugin names", [])
    if len(plugins) > MAX_PLUGINS or not all(
        isinstance(p, str) and len(p) <= MAX_PLUGIN_NAME for p in plugins
    ):
        raise XmlRpcError(
            f"'plugins' must be at most {MAX_PLUGINS} names of at most "
            f"{MAX_PLUGIN_NAME} characters",
            INVALID_PARAMS,
        )
    nick = _text(d, "nick", MAX_NICK, "")
    notify_pass = _text(d, "notify_pass", MAX_PASS, "")
    # durable before the reply (DESIGN.md)
    sat = await disp.backend.register(
        caller, port, nick=nick, plugins=plugins, notify_pass=notify_pass
    )
    return sat.host_id


async def _deregister(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> str:
    await disp.backend.deregister(_host_id(d), caller)
    return "OK"


async def _relay(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> str:
    host_id = _host_id(d)
    if "data" not in d:
        raise XmlRpcError("missing key 'data': the message to relay", INVALID_PARAMS)
    backend = disp.backend
    sender = backend.registry.check_owner(host_id, caller)
    saved = backend.enqueue(sender, d)  # RelayBusyError if the limiter's queue is full
    backend.registry.accept_relay(host_id, caller, backend.wall())
    await saved  # committed before 'OK' leaves (DESIGN.md: nothing acknowledged is lost)
    return "OK"


async def _satellites(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> list[str]:
    return disp.backend.registry.host_ids()


async def _num(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> int:
    return len(disp.backend.registry)


async def _max(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> int:
    return _int(disp.backend.registry.max_satellites)


async def _ctime(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> float:
    return disp.backend.registry.get(_host_id(d)).ctime


async def _sat_props(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> dict[str, Any]:
    return _props(disp.backend.registry.get(_host_id(d)))


async def _sat_raw(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> dict[str, Any]:
    return _raw(disp.backend.registry.get(_host_id(d)))


async def _list(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> list[str]:
    return sorted(disp.by_name)


async def _help(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> str:
    return disp.help(_method_name(d))


async def _signature(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> dict[str, Any]:
    return disp.signature(_method_name(d))


async def _properties(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> dict[str, Any]:
    return disp.backend.properties()


async def _ping(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> str:
    return "OK"


async def _test(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> dict[str, Any]:
    return d


async def _call_method(disp: Dispatcher, d: dict[str, Any], caller: str | None) -> Any:
    name = _method_name(d)
    params = _get(d, "params", (dict, list), "a struct (or a list of parameters)", {})
    spec = disp.lookup(name)
    if spec.handler is _call_method:
        raise XmlRpcError("call_method cannot call itself", INVALID_PARAMS)
    args = tuple(params) if isinstance(params, list) else (params,)
    return await disp.call(name, args, None)  # anonymized: no caller address


_PROPS_DOC = (
    "a struct: addr [ip, port], host_id, nick, plugins, ctime (date), ping_current, "
    "ping_count, ping_min, ping_max, ping_avg (ms, -1 before the first answer), ping_fails, "
    "ping_fails_in_row, send_count, send_time (date), recv_count, recv_time (date), "
    "notify_fails"
)
_HOST = {"host_id": "string: a registered satellite's id, 'ip:port'"}

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "relay.register",
        (),
        _register,
        "register a satellite. satellites that want to use relaying must call this method "
        "first. the host id is 'ip:port' with the caller's address; registering again "
        "refreshes nick, plugins and notify_pass. past the relay's max satellites, a fault.",
        "string: the host_id to use in further calls",
        {
            "port": "int: the satellite's listening port (its XML-RPC server at /)",
            "plugins": "list of strings: plugins loaded by the satellite (optional)",
            "nick": "string: a nickname (optional; default the host_id)",
            "notify_pass": "string: sent back in every notify call to the satellite",
        },
        acts_for_caller=True,
    ),
    MethodSpec(
        "relay.deregister",
        (),
        _deregister,
        "revoke a satellite's registration. should be called by satellites before they "
        "shut down. the caller's address must match the supplied host id.",
        "string: 'OK'",
        dict(_HOST),
        acts_for_caller=True,
    ),
    MethodSpec(
        "relay.relay",
        (),
        _relay,
        "relay data to every other registered satellite: their notify(dict) receives this "
        "struct with their own notify_pass. only queues the message, durably: once 'OK' "
        "is answered it reaches every satellite registered now, even across a restart of "
        "the hub (at least once). a fault says so when the relay is busy (its queue is "
        "full), and nothing already queued is lost.",
        "string: 'OK' once queued and saved",
        {**_HOST, "data": "any: the data to relay"},
        acts_for_caller=True,
    ),
    MethodSpec(
        "relay.get_satellites",
        ("co2.get_satellites", "web.get_satellites"),
        _satellites,
        "get IDs of currently registered satellites.",
        "list of strings: host_ids, in registration order",
        optional=True,
    ),
    MethodSpec(
        "relay.get_num_satellites",
        ("co2.get_num_satellites", "web.get_num_satellites"),
        _num,
        "get number of currently registered satellites.",
        "int",
        optional=True,
    ),
    MethodSpec(
        "relay.get_max_satellites",
        (),
        _max,
        "get the maximum number of satellites that are allowed to be registered simultaneously.",
        "int",
        optional=True,
    ),
    MethodSpec(
        "relay.get_satellite_ctime",
        ("co2.get_satellite_ctime", "web.get_satellite_ctime"),
        _ctime,
        "get a satellite's creation (=registration) time.",
        "double: seconds since the epoch",
        dict(_HOST),
    ),
    MethodSpec(
        "relay.get_satellite_props",
        ("co2.get_satellite_props", "web.get_satellite_props", "co2.get_satellite"),
        _sat_props,
        "get status / statistical information from a satellite.",
        _PROPS_DOC,
        dict(_HOST),
    ),
    MethodSpec(
        "relay.get_satellite_props_raw",
        (),
        _sat_raw,
        "get a satellite's props as plain numbers: times in seconds since the epoch.",
        "a struct: as relay.get_satellite_props, with doubles for the dates",
        dict(_HOST),
    ),
    MethodSpec(
        "sys.listMethods",
        (
            "co2.get_method_names",
            "co2.co2_get_method_names",
            "web.get_method_names",
            "system.listMethods",
        ),
        _list,
        "get the names of available methods.",
        "list of strings",
        optional=True,
    ),
    MethodSpec(
        "sys.methodHelp",
        ("co2.get_method_help", "web.get_method_help", "system.methodHelp"),
        _help,
        "get help (the doc string) for a specific method.",
        "string",
        {"method": "string: the method's name"},
        takes_name=True,
    ),
    MethodSpec(
        "sys.methodSignature",
        ("co2.get_method_signature", "web.get_method_signature", "system.methodSignature"),
        _signature,
        "get a description of how to use a specific method.",
        "a struct: args, args_d (defaults), args_v, args_kw (both unused in XML-RPC), "
        "params (the keys of the struct it takes), returns",
        {"method": "string: the method's name"},
        takes_name=True,
    ),
    MethodSpec(
        "system.get_properties",
        ("sys.get_properties", "web.get_properties"),
        _properties,
        "get system properties.",
        "a struct: co2_author, kernel, uptime (int s), operating_system, maintainer, "
        "start_time (date), sw_platform, hw_platform, co2_version, maintainer_email, "
        "hardware, plugins (list), server_time (date), processor",
        optional=True,
    ),
    MethodSpec("ping", ("web.ping",), _ping, "answer a ping request.", "string: 'OK'", {}, True),
    MethodSpec(
        "test",
        ("web.test",),
        _test,
        "just a test method: returns the struct it was given.",
        "the struct given",
        {},
        True,
    ),
    MethodSpec(
        "call_method",
        ("web.call_method",),
        _call_method,
        "'anonymized' call method: call another method without the caller's address, so "
        "methods that act for their caller (relay.register, relay.deregister, relay.relay) "
        "are refused.",
        "what the method called returns",
        {
            "method": "string: the method's name",
            "params": "struct, or list of parameters (optional)",
        },
    ),
)
