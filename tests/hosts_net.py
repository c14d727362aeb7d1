"""Hosts in network namespaces, for the partition tests (``tests/system/test_hosts.py``).

Each host is a network namespace (``ip netns``) with one veth link into a hub namespace that
holds a bridge; the test process itself gets a link into the hub too, so it can read the
database the hosts write. Every name starts with a per-run prefix (``pn`` + the pid in hex +
a random byte) and the subnet is a free ``10.231.X.0/24``, so parallel runs never collide.
``close()`` deletes every namespace and link (also after a failed test); the namespaces of a
run killed before it could clean up are deleted by the next run (``forget_dead_runs``).

Faults, each healed by ``heal()``:

- ``cut(host)``: the host's link is set down on the bridge side: nothing reaches it, nothing
  leaves it (packets vanish; connections time out, as on a pulled cable);
- ``cut(host, other, ...)``: only the traffic between ``host`` and each ``other`` is lost, both
  ways: each side's neighbour entry for the other points at a MAC address nobody has, so the
  frames leave and vanish (this machine has neither iptables nor tc qdiscs; a blackhole route
  would fail fast with EINVAL instead of losing packets silently).

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); ``available()`` says why not otherwise.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess

NOWHERE = "02:00:00:00:de:ad"
"""A locally administered MAC address no interface has: frames sent to it are lost."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run as root"
    name = f"pnprobe{os.getpid():x}"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    used = _ip("-4", "route", "show", "table", "all").stdout + _ip("-4", "addr").stdout
    for third in list(range(1, 255)):
        third = (os.getpid() + third) % 254 + 1
        net = ipaddress.ip_network(f"10.231.{third}.0/24")
        if f"10.231.{third}." not in used:
            return net
    raise RuntimeError("no free 10.231.X.0/24 subnet for the test hosts")


class Hosts:
    """Namespaces named ``<prefix>-<host>``, host ``i`` (from 1) at ``10.231.X.i``."""

    def __init__(self, names):
        self.prefix = f"pn{os.getpid():x}{secrets.token_hex(1)}"  # at most 10 characters
        self.names = list(names)
        self.net = _free_subnet()
        hosts = list(self.net.hosts())
        self.address = {name: str(hosts[i]) for i, name in enumerate(self.names)}
        self.test_address = str(hosts[253])
        self.mac: dict[str, str] = {}
        self.cuts: list[tuple[str, tuple[str, ...]]] = []
        self.made: list[str] = []
        self.root_link = None

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def open(self) -> "Hosts":
        forget_dead_runs()
        try:
            self._open()
        except Exception:
            self.close()
            raise
        return self

    def _open(self) -> None:
        hub = self.ns("hub")
        _ip("netns", "add", hub)
        self.made.append(hub)
        _ip("-n", hub, "link", "set", "lo", "up")
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        prefix = self.net.prefixlen
        for host in self.names:
            ns = self.ns(host)
            _ip("netns", "add", ns)
            self.made.append(ns)
            inside, outside = f"{self.prefix}{host[:4]}", f"{self.prefix}{host[:4]}h"
            _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "netns", hub)
            _ip("-n", ns, "link", "set", inside, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{self.address[host]}/{prefix}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", hub, "link", "set", outside, "master", "br0")
            _ip("-n", hub, "link", "set", outside, "up")
            self.mac[host] = _ip("-n", ns, "-br", "link", "show", "eth0").stdout.split()[2]
        # the test process's own link into the hub (it reads what the hosts wrote)
        self.root_link = f"{self.prefix}t"
        _ip("link", "add", self.root_link, "type", "veth", "peer", "name", f"{self.prefix}th")
        _ip("link", "set", f"{self.prefix}th", "netns", hub)
        _ip("-n", hub, "link", "set", f"{self.prefix}th", "master", "br0")
        _ip("-n", hub, "link", "set", f"{self.prefix}th", "up")
        _ip("addr", "add", f"{self.test_address}/{prefix}", "dev", self.root_link)
        _ip("link", "set", self.root_link, "up")

    def run(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def cut(self, host: str, *others: str) -> None:
        """Lose every packet between ``host`` and ``others`` (all hosts and the test if none)."""
        if not others:
            _ip("-n", self.ns("hub"), "link", "set", f"{self.prefix}{host[:4]}h", "down")
        for other in others:
            _ip("-n", self.ns(host), "neigh", "replace", self.address[other], "lladdr", NOWHERE,
                "nud", "permanent", "dev", "eth0")
            _ip("-n", self.ns(other), "neigh", "replace", self.address[host], "lladdr", NOWHERE,
                "nud", "permanent", "dev", "eth0")
        self.cuts.append((host, others))

    def heal(self) -> None:
        """Undo every cut."""
        while self.cuts:
            host, others = self.cuts.pop()
            if not others:
                _ip("-n", self.ns("hub"), "link", "set", f"{self.prefix}{host[:4]}h", "up")
            for other in others:
                _ip("-n", self.ns(host), "neigh", "del", self.address[other], "dev", "eth0", check=False)
                _ip("-n", self.ns(other), "neigh", "del", self.address[host], "dev", "eth0", check=False)

    def close(self) -> None:
        """Delete every namespace (their links go with them) and the test's own link."""
        if self.root_link:
            _ip("link", "del", self.root_link, check=False)
            self.root_link = None
        for ns in reversed(self.made):
            _ip("netns", "del", ns, check=False)
        self.made.clear()


def forget_dead_runs() -> list[str]:
    """Delete the namespaces of earlier runs on this machine whose process is gone (killed
    before it could clean up): ``pn<pid in hex><2 hex>-<host>``. Returns what it deleted."""
    gone = []
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        head = name.split("-", 1)[0]
        if not (head.startswith("pn") and "-" in name and len(head) > 4):
            continue
        try:
            pid = int(head[2:-2], 16)
        except ValueError:
            continue
        if pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        _ip("netns", "del", name, check=False)
        gone.append(name)
    return gone


def leftovers(prefix: str) -> list[str]:
    """Namespaces still named with ``prefix`` (a test asserts none are left)."""
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines()
            if line.startswith(prefix)]
