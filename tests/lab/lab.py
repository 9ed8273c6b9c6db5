"""A fleet lab in network namespaces: N hosts on one bridge, real links, real faults.

Theory of operation
-------------------
Each host is a network namespace with one veth whose other end sits on a bridge in the
root namespace; the bridge has the lab's first address, so this process (the test, the
benchmark) reaches every host directly. A host's link is capped in both directions with
``tc tbf`` (the kernel here has no netem): egress of the veth inside the namespace is
the host's upload, egress of its peer on the bridge is its download. Packet loss and
partitions are nftables rules inside the host's namespace (``numgen random`` drops;
drops by address between groups), so deleting the namespace deletes them too. Latency is
not a qdisc here: use a user-space relay such as ``benchmarks/wan.py`` where it matters.

Every name the lab makes starts with its prefix, ``sgl`` + the owner's pid (6 base-36
digits) + one more character: the bridge ``<prefix>br``, host-side veths
``<prefix>v<i>``, namespaces ``<prefix>-<host>``, tmpfs mounts under a directory named
``<prefix>-disk``. :meth:`Lab.close` removes what it made, kills the processes it
started (by pid) and is called from ``finally``, from ``atexit`` and on SIGTERM;
:func:`sweep`, run at every start, removes what a lab whose owner is gone left behind
(kill -9 of pytest). :func:`leftovers` lists what is left of a prefix, so a test can
check that nothing is.

Processes run in a host with ``ip netns exec NS python -m smartget ...``
(:meth:`Lab.popen`). Needs root, ``ip`` (iproute2), ``tc`` and ``nft`` (nftables).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Host", "Lab", "available", "leftovers", "sweep"]

ROOT = "sgl"
_NAME = re.compile(rf"^{ROOT}([0-9a-z]{{6}})([0-9a-z])")
_counter = itertools.count()
TABLE = "sglab"  # the nftables table in each namespace


def _b36(number: int, width: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    for _ in range(width):
        number, rest = divmod(number, 36)
        out = digits[rest] + out
    return out


def available() -> str | None:
    """Why the lab cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    for tool in ("ip", "tc", "nft"):
        if shutil.which(tool) is None:
            return f"the lab needs {tool!r} (scripts/bootstrap --test installs it)"
    return None


def _run(*argv: str, check: bool = True, timeout: float = 20.0) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


@dataclass(frozen=True)
class Host:
    """One emulated machine: a namespace (None: this one, for loopback fleets) and its IP."""

    name: str
    ip: str
    netns: str | None = None

    def argv(self, *command: str) -> list[str]:
        """``command`` as run inside this host."""
        if self.netns is None:
            return list(command)
        return ["ip", "netns", "exec", self.netns, *command]


def _owner_alive(pid36: str) -> bool:
    try:
        pid = int(pid36, 36)
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_names() -> list[str]:
    return [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]


def _link_names() -> list[str]:
    names = []
    for line in _run("ip", "-o", "link", "show").splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _mounts() -> list[str]:
    with open("/proc/self/mounts") as mounts:
        return [line.split()[1] for line in mounts]


def leftovers(prefix: str) -> list[str]:
    """What exists of a lab's prefix: namespaces, links and mounts (empty when clean)."""
    found = [f"netns {n}" for n in _netns_names() if n.startswith(prefix)]
    found += [f"link {n}" for n in _link_names() if n.startswith(prefix)]
    found += [f"mount {m}" for m in _mounts() if f"/{prefix}-disk" in m]
    return found


def _remove(prefix: str) -> None:
    """Remove every namespace, link and mount of ``prefix``, killing what runs inside."""
    for mount in _mounts():
        if f"/{prefix}-disk" in mount:
            _run("umount", "-l", mount, check=False)
    for ns in _netns_names():
        if not ns.startswith(prefix):
            continue
        for pid in _run("ip", "netns", "pids", ns, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _run("ip", "netns", "delete", ns, check=False)
    for link in _link_names():
        if link.startswith(prefix):
            _run("ip", "link", "delete", link, check=False)


def sweep() -> list[str]:
    """Remove what labs whose owner process is gone left behind; the prefixes removed."""
    names = _netns_names() + _link_names() + [Path(m).name for m in _mounts()]
    stale = set()
    for name in names:
        match = _NAME.match(name)
        if match and not _owner_alive(match.group(1)):
            stale.add(f"{ROOT}{match.group(1)}{match.group(2)}")
    for prefix in sorted(stale):
        _remove(prefix)
    return sorted(stale)


def _subnet(prefix: str) -> ipaddress.IPv4Network:
    """A /16 in 10/8 that no address of this machine is in (one per lab)."""
    used = _run("ip", "-4", "-o", "addr", "show")
    start = int(prefix[len(ROOT) :], 36) % 150
    for step in range(150):
        net = ipaddress.IPv4Network(f"10.{100 + (start + step) % 150}.0.0/16")
        if f" 10.{net.network_address.packed[1]}." not in used:
            return net
    raise RuntimeError("no free 10.x.0.0/16 for the lab")


@dataclass
class Lab:
    """A lab of hosts on one bridge. ``with Lab() as lab:`` or call :meth:`close`."""

    prefix: str = ""
    # The links' MTU. 1500 as on the Internet; 9000 (jumbo frames) cuts the packets the
    # kernel emulates six-fold, where 30 hosts share two cores (benchmarks/fleet.py).
    mtu: int = 1500
    hosts: dict[str, Host] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _veth: dict[str, str] = field(default_factory=dict)  # host name -> bridge-side veth
    _closed: bool = False

    def __post_init__(self) -> None:
        why = available()
        if why is not None:
            raise RuntimeError(why)
        if not self.prefix:
            self.prefix = f"{ROOT}{_b36(os.getpid(), 6)}{_b36(next(_counter), 1)}"
        sweep()
        _remove(self.prefix)  # a crashed earlier lab of this very process
        self.net = _subnet(self.prefix)
        self.bridge = f"{self.prefix}br"
        self.gateway = str(self.net.network_address + 1)
        atexit.register(self.close)
        self._previous_sigterm = signal.getsignal(signal.SIGTERM)
        with contextlib.suppress(ValueError):  # not in the main thread: atexit only
            signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            _run("ip", "link", "add", self.bridge, "mtu", str(self.mtu), "type", "bridge")
            _run("ip", "addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.close()
        previous = self._previous_sigterm
        if callable(previous):
            previous(signum, frame)
        else:
            raise SystemExit(128 + signum)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hosts ---------------------------------------------------------------------------

    def add_host(self, name: str) -> Host:
        """A new namespace with an address on the bridge (and lo up)."""
        index = len(self.hosts)
        ip = str(self.net.network_address + 2 + index)
        netns = f"{self.prefix}-{name}"
        veth = f"{self.prefix}v{index}"
        _run("ip", "netns", "add", netns)
        _run(
            "ip", "link", "add", veth, "mtu", str(self.mtu), "type", "veth",
            "peer", "name", "eth0", "mtu", str(self.mtu), "netns", netns,
        )  # fmt: skip
        _run("ip", "link", "set", veth, "master", self.bridge, "up")
        ns = ("ip", "netns", "exec", netns)
        _run(*ns, "ip", "addr", "add", f"{ip}/{self.net.prefixlen}", "dev", "eth0")
        _run(*ns, "ip", "link", "set", "eth0", "up")
        _run(*ns, "ip", "link", "set", "lo", "up")
        _run(*ns, "nft", "add", "table", "inet", TABLE)
        for hook in ("input", "output"):
            _run(
                *ns, "nft", "add", "chain", "inet", TABLE, hook,
                f"{{ type filter hook {hook} priority 0 ; }}",
            )  # fmt: skip
        host = Host(name, ip, netns)
        self.hosts[name] = host
        self._veth[name] = veth
        return host

    def cap(self, host: Host, up: int, down: int | None = None) -> None:
        """Cap ``host``'s link: ``up`` bytes/s out of it, ``down`` (default: up) into it."""
        down = up if down is None else down
        assert host.netns is not None
        for dev, rate, inside in ((["eth0"], up, True), ([self._veth[host.name]], down, False)):
            argv = ["tc", "qdisc", "replace", "dev", dev[0], "root", "tbf"]
            burst = max(64 * 1024, rate // 50)  # 20 ms of the rate, at least 64 KiB
            argv += ["rate", f"{rate * 8}bit", "burst", str(burst), "latency", "100ms"]
            _run(*(host.argv(*argv) if inside else argv))

    def loss(self, host: Host, percent: float) -> None:
        """Drop ``percent`` % of the packets in each direction of ``host``'s link."""
        assert host.netns is not None
        per_10k = round(percent * 100)
        for hook in ("input", "output"):
            _run(
                *host.argv(
                    "nft", "add", "rule", "inet", TABLE, hook,
                    "meta", "iifname" if hook == "input" else "oifname", "eth0",
                    "numgen", "random", "mod", "10000", "<", str(per_10k),
                    "counter", "drop", "comment", '"loss"',
                )
            )  # fmt: skip

    def partition(self, side_a: Sequence[Host], side_b: Sequence[Host]) -> None:
        """Drop every packet between ``side_a`` and ``side_b`` until :meth:`heal`."""
        for here, there in ((side_a, side_b), (side_b, side_a)):
            others = "{ " + ", ".join(h.ip for h in there) + " }"
            for host in here:
                for hook, key in (("input", "saddr"), ("output", "daddr")):
                    _run(
                        *host.argv(
                            "nft", "add", "rule", "inet", TABLE, hook, "ip", key, others,
                            "counter", "drop", "comment", '"partition"',
                        )
                    )  # fmt: skip

    def heal(self) -> None:
        """Remove every partition rule (loss rules stay)."""
        for host in self.hosts.values():
            for hook in ("input", "output"):
                listing = _run(*host.argv("nft", "-a", "list", "chain", "inet", TABLE, hook))
                for line in listing.splitlines():
                    found = re.search(r'comment "partition" # handle (\d+)', line)
                    if found:
                        _run(
                            *host.argv(
                                "nft", "delete", "rule", "inet", TABLE, hook,
                                "handle", found.group(1),
                            )
                        )  # fmt: skip

    def drops(self, host: Host) -> int:
        """Packets the host's loss and partition rules dropped so far."""
        total = 0
        for hook in ("input", "output"):
            listing = _run(*host.argv("nft", "list", "chain", "inet", TABLE, hook))
            total += sum(int(n) for n in re.findall(r"packets (\d+)", listing))
        return total

    @contextlib.contextmanager
    def small_disk(self, path: Path, size: int) -> Iterator[Path]:
        """A tmpfs of ``size`` bytes at a new directory; every host sees it at that path."""
        mount = path.parent / f"{self.prefix}-disk" / path.name
        mount.mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount))
        try:
            yield mount
        finally:
            _run("umount", "-l", str(mount), check=False)

    # -- processes -----------------------------------------------------------------------

    def popen(
        self, host: Host, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``host``, output to ``log``; :meth:`close` kills it if alive."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                host.argv(*argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Kill the lab's processes and remove everything it made; safe to call again."""
        if self._closed:
            return
        self._closed = True
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        _remove(self.prefix)
        with contextlib.suppress(ValueError):
            atexit.unregister(self.close)
        with contextlib.suppress(ValueError):
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
