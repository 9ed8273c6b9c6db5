"""Settings shared by every service: CLI flags, a TOML file, logging.

Every service command takes ``--config FILE``. The file holds the same keys as the
command's flags (``node-ttl`` or ``node_ttl``), either at the top level or in a table
named after the command (``[hub]``, ``[mesh.run]``), so one file can configure several
services. Flags
given on the command line win over the file; the file wins over built-in defaults.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from smartget.errors import ConfigError

__all__ = [
    "DIR",
    "FILE",
    "HOSTPORT",
    "RATE",
    "REQUIRED",
    "SIZE",
    "HostPort",
    "common_options",
    "config_from",
    "from_environment_only",
    "load_toml",
    "options_from",
    "parse_hostport",
    "parse_size",
    "refuse_secret_on_command_line",
    "setting",
    "setup_logging",
]

F = TypeVar("F", bound=Callable[..., Any])

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_CONFIG_BYTES = 1 << 20
MAX_SIZE = 1 << 60  # bytes (and bytes/s): 1 EiB, beyond any disk or link


def parse_hostport(text: str, *, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``"0.0.0.0:20110"`` -> ``("0.0.0.0", 20110)``; ``":8200"`` and ``"8200"`` use default_host.

    IPv6 addresses go in brackets: ``"[::1]:8200"``.
    """
    text = text.strip()
    if text.isascii() and text.isdigit():
        host, port_text = default_host, text
    elif text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ConfigError(f"expected [IPv6]:PORT, got {text!r}")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"expected HOST:PORT, got {text!r}")
        host = host or default_host
    # isascii: "²".isdigit() is true, and int() refuses it
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"port must be a number from 0 to 65535, got {port_text!r} in {text!r}")
    return host, int(port_text)


class HostPort(click.ParamType[tuple[str, int], Any]):
    """A click type for ``HOST:PORT``."""

    name = "host:port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return parse_hostport(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?)([bB]?)\s*$")
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """``"64MiB"`` -> 67108864, ``"10MB"`` -> 10000000, ``"512"`` -> 512 (bytes)."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ConfigError(f"expected a size such as 64MiB, 10MB or 4096, got {text!r}")
    number, unit, binary, _ = match.groups()
    base = 1024 if binary or unit == "" else 1000
    value = float(number) * base ** _UNITS[unit.lower()]
    if not value < MAX_SIZE:  # also inf, from a number too long for a float
        raise ConfigError(f"size {text[:40]!r} is beyond {MAX_SIZE:,} bytes")
    return int(value)


class Size(click.ParamType[int, Any]):
    """A click type for byte sizes (``64MiB``); rates take ``20MiB/s``."""

    def __init__(self, *, rate: bool = False) -> None:
        self.rate = rate
        self.name = "rate" if rate else "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        text = str(value)
        if self.rate:
            text = text.removesuffix("/s")
        try:
            return parse_size(text)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


HOSTPORT = HostPort()
DIR = click.Path(file_okay=False, path_type=Path)  # a directory, made if missing
FILE = click.Path(dir_okay=False, exists=True, path_type=Path)  # an existing file
SIZE = Size()
RATE = Size(rate=True)


def load_toml(path: Path, section: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read a TOML settings file and return the table for ``section``.

    ``section`` is a command path such as ``("smartget", "mesh", "run")``: tables are
    followed as far as they exist (``[mesh.run]``, else ``[mesh]``, else the top level),
    so one file can configure several services. Sub-tables of other commands are left out.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    path_parts = (section,) if isinstance(section, str) else (section or ())
    for part in path_parts:
        if isinstance(data.get(part), dict):
            data = data[part]
    return {
        key.replace("-", "_"): value for key, value in data.items() if not isinstance(value, dict)
    }


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if not value:
        return value
    command = ctx.command
    known = {p.name for p in command.params if p.name and p.name != "config"}
    try:
        settings = load_toml(Path(value), section=tuple(ctx.command_path.split()))
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
    unknown = sorted(set(settings) - known)
    if unknown:
        raise click.BadParameter(
            f"unknown key(s) in {value}: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(n for n in known))}",
            ctx=ctx,
            param=param,
        )
    ctx.default_map = {**(ctx.default_map or {}), **settings}
    return value


def common_options(func: F) -> F:
    """Add ``--config FILE`` and ``--log-level`` to a service command."""
    func = click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default="info",
        show_default=True,
        help="How much to log (to stderr).",
    )(func)
    return click.option(
        "--config",
        type=click.Path(dir_okay=False, path_type=str),
        is_eager=True,
        expose_value=False,
        callback=_load_config,
        help="TOML file holding any of these options (flags win over the file).",
    )(func)


def from_environment_only(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A click callback for a secret option: refuse it as a flag (``ps`` shows argv)."""
    if value is not None and param.name:
        envvar = param.envvar if isinstance(param.envvar, str) else "its environment variable"
        refuse_secret_on_command_line(param.name, envvar)
    return value


def refuse_secret_on_command_line(param: str, instead: str) -> None:
    """Refuse a secret given as a flag: every user of the machine can read argv (``ps``).

    The option still takes its value from the environment or a ``--config`` file.
    """
    ctx = click.get_current_context()
    if ctx.get_parameter_source(param) is click.core.ParameterSource.COMMANDLINE:
        flag = "--" + param.replace("_", "-")
        raise click.BadParameter(
            f"a secret on the command line is readable by every user (ps): use {instead}",
            ctx=ctx,
            param_hint=flag,
        )


class RepeatFilter(logging.Filter):
    """Let through at most ``burst`` records of one kind (logger, level, message
    template) per ``window`` seconds, then say how many were dropped: an attacker's
    flood of bad requests, or a loop's repeated accept error, must not fill the disk
    with logs (issue 12.4). Bounded: at most ``max_kinds`` kinds are tracked."""

    def __init__(self, burst: int = 20, window: float = 60.0, max_kinds: int = 10_000) -> None:
        super().__init__()
        self.burst, self.window, self.max_kinds = burst, window, max_kinds
        self._kinds: dict[tuple[str, int, str], list[float]] = {}  # kind -> [since, n]

    def filter(self, record: logging.LogRecord) -> bool:
        now = record.created  # the record's own clock: no clock read here (cores import us)
        kind = (record.name, record.levelno, str(record.msg))
        seen = self._kinds.get(kind)
        if seen is None or now - seen[0] >= self.window:
            dropped = int(seen[1]) - self.burst if seen is not None else 0
            if len(self._kinds) >= self.max_kinds:
                self._kinds.clear()
            self._kinds[kind] = [now, 1]
            if dropped > 0:
                record.msg = f"{record.msg} [{dropped} more like it were not logged]"
            return True
        seen[1] += 1
        return seen[1] <= self.burst


def setup_logging(level: str) -> None:
    """Log to stderr with timestamps, repeats limited (RepeatFilter); once per process."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatFilter())


def is_loopback_or_private(host: str) -> bool:
    """True for 127/8, ::1, RFC 1918 and other non-global addresses."""
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False


# --- One source per setting -------------------------------------------------------------
#
# A core's settings are a frozen dataclass whose fields carry their default, help and
# range (``setting``). The core takes that object (as aioquic's QuicConnection takes one
# QuicConfiguration); the CLI makes its options from it (``options_from``) and builds it
# back from click's keyword arguments (``config_from``). No default is written twice.

C = TypeVar("C")

_SETTING = "smartget.setting"
REQUIRED: Any = dataclasses.MISSING  # setting(REQUIRED, ...): no default, a required option


@dataclasses.dataclass(frozen=True)
class _SettingInfo:
    help: str
    min: float | None
    max: float | None
    click_type: Any
    flag: str | None
    envvar: str | None
    show_default: bool | str
    multiple: bool
    metavar: str | None
    typed: str | None  # the default as typed ("1MiB"), shown by --help


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    click_type: Any = None,
    flag: str | None = None,
    envvar: str | None = None,
    show_default: bool | str = True,
    factory: Callable[[], Any] | None = None,
    multiple: bool = False,
    metavar: str | None = None,
) -> Any:
    """A config field with its default, ``--help`` text and range in one place.

    ``multiple``: a repeatable option; the field holds a tuple of its values.
    ``metavar``: how ``--help`` names the value (``W:H``). A size's default may be
    given as typed (``"1MiB"``): the field holds the bytes, ``--help`` shows the text.

    ``flag`` overrides the option's name (default: ``--field-name``); ``click_type``
    overrides the type made from the field's annotation (``HOSTPORT``, ``RATE``, a Path).
    ``REQUIRED`` as the default makes a field without default and a required option.
    """
    typed = None
    if isinstance(click_type, Size) and isinstance(default, str):
        typed, default = default, click_type.convert(default, None, None)
    info = _SettingInfo(
        help, min, max, click_type, flag, envvar, show_default, multiple, metavar, typed
    )
    metadata = {_SETTING: info}
    if default is REQUIRED:
        return dataclasses.field(metadata=metadata)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _settings_of(cls: type) -> list[tuple[dataclasses.Field[Any], _SettingInfo]]:
    return [(f, f.metadata[_SETTING]) for f in dataclasses.fields(cls) if _SETTING in f.metadata]


def _click_type(field: dataclasses.Field[Any], info: _SettingInfo) -> Any:
    if info.click_type is not None:
        return info.click_type
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    if kind == "bool":
        return None
    if kind == "int":
        return click.IntRange(
            None if info.min is None else int(info.min), None if info.max is None else int(info.max)
        )
    if kind == "float":
        return click.FloatRange(info.min, info.max)
    return None


def options_from(cls: type, *, exclude: tuple[str, ...] = (), prefix: str = "") -> Callable[[F], F]:
    """A decorator adding one click option per ``setting`` field of ``cls``.

    With ``prefix`` (``"relay"``), field ``rate`` is ``--relay-rate`` (``relay_rate``).
    """
    pre = f"{prefix}_" if prefix else ""

    def decorate(func: F) -> F:
        for field, info in reversed(_settings_of(cls)):
            if field.name in exclude:
                continue
            param = pre + field.name
            name = info.flag or "--" + param.replace("_", "-")
            required = (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            )
            if required:
                default = None
            elif field.default_factory is not dataclasses.MISSING:
                default = field.default_factory()
            else:
                default = field.default
            if info.multiple:
                func = click.option(
                    name,
                    param,
                    type=info.click_type,
                    multiple=True,
                    metavar=info.metavar,
                    help=info.help,
                )(func)
                continue
            if isinstance(default, tuple) and len(default) == 2:  # an address, as typed
                default = f"{default[0]}:{default[1]}"
            if info.typed is not None:
                default = info.typed
            kind = _click_type(field, info)
            if kind is None and isinstance(default, bool):
                func = click.option(
                    name,
                    param,
                    is_flag=True,
                    default=default,
                    show_default=info.show_default if "/" in name else False,
                    help=info.help,
                )(func)
                continue
            extra: dict[str, Any] = {"required": True} if required else {"default": default}
            # No default at all for a required option: click 8.3+ takes an explicit
            # None as a given value and would not ask for the option.
            func = click.option(
                name,
                param,
                type=kind,
                envvar=info.envvar,
                show_default=False if required else info.show_default,
                metavar=info.metavar,
                help=info.help,
                **extra,
            )(func)
        return func

    return decorate


def config_from(cls: type[C], kwargs: dict[str, Any], *, prefix: str = "", **overrides: Any) -> C:
    """Build ``cls`` from click's keyword arguments, popping the fields it takes."""
    pre = f"{prefix}_" if prefix else ""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {
        key.removeprefix(pre): kwargs.pop(key)
        for key in list(kwargs)
        if key.startswith(pre) and key.removeprefix(pre) in names
    }
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if _SETTING in f.metadata and f.metadata[_SETTING].multiple and f.name in values:
            values[f.name] = tuple(values[f.name])
    return cls(**{**values, **overrides})
