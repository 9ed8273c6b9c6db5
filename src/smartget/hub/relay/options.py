"""``smartget hub --relay-*``: the relay's command-line options (also keys of --config).

:func:`relay_options` adds the options to a click command; :func:`relay_settings` turns
the values it received (``relay_*`` keyword arguments) into :class:`RelaySettings`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from smartget.hub.relay.service import RelaySettings

__all__ = ["relay_options", "relay_settings"]

F = TypeVar("F", bound=Callable[..., Any])

_DEFAULTS = RelaySettings()

# (flag, click type, help); the parameter is relay_<field>, the field as in RelaySettings.
_OPTIONS: tuple[tuple[str, Any, str], ...] = (
    (
        "max-satellites",
        click.IntRange(min=1, max=2**31 - 1),
        "Satellites that may be registered at once; relay.register past it is a fault.",
    ),
    (
        "ping-interval",
        click.FloatRange(min=0.05),
        "Seconds between two rounds of pings to every satellite.",
    ),
    ("ping-timeout", click.FloatRange(min=0.05), "Seconds a satellite has to answer a ping."),
    (
        "ping-fails",
        click.IntRange(min=1),
        "Failed pings in a row after which a satellite is dropped.",
    ),
    (
        "notify-timeout",
        click.FloatRange(min=0.05),
        "Seconds a satellite has to take one relayed message (its notify call).",
    ),
    (
        "queue",
        click.IntRange(min=1),
        "Accepted messages not yet delivered to every satellite (kept in the store, so "
        "they survive a restart); past it relay.relay answers a 'busy' fault.",
    ),
    ("rate", click.FloatRange(min=0.001), "Messages relayed a second."),
    (
        "mailbox",
        click.IntRange(min=1),
        "Messages waiting for one slow satellite before further ones to it are dropped.",
    ),
    ("max-request", click.IntRange(min=1024), "Largest XML-RPC request body, in bytes."),
)


def relay_options(func: F) -> F:
    """Add the --relay-* options to a click command."""
    func = click.option(
        "--relay-maintainer-email",
        default=_DEFAULTS.maintainer_email,
        help="Shown by system.get_properties.",
    )(func)
    func = click.option(
        "--relay-maintainer", default=_DEFAULTS.maintainer, help="Shown by system.get_properties."
    )(func)
    func = click.option(
        "--relay-require-token/--relay-open",
        default=_DEFAULTS.require_token,
        show_default=True,
        help="Require the hub's token on /RPC2 (as http://relay:TOKEN@HOST/RPC2); co2 "
        "satellites call an open relay, which is the default.",
    )(func)
    for flag, kind, text in reversed(_OPTIONS):
        func = click.option(
            f"--relay-{flag}",
            type=kind,
            default=getattr(_DEFAULTS, flag.replace("-", "_")),
            show_default=True,
            help=text,
        )(func)
    return func


def relay_settings(values: dict[str, Any]) -> RelaySettings:
    """``{"relay_queue": 5, ...}`` -> RelaySettings(queue=5, ...)."""
    return RelaySettings(**{key.removeprefix("relay_"): value for key, value in values.items()})
