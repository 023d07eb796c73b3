"""Test hosts on one machine: a network namespace per host, a veth pair into one bridge.

Each host gets an address on 10.77.<net>.0/24; the machine itself keeps .1 on the bridge, so the
test reaches every host as another host on the same network would. ``cut`` takes a host's link
down (its processes keep running, as on a machine whose cable was pulled); ``heal`` restores it.
Everything made here is named with one tag per run and removed by ``close``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from shardline import servers


class LabError(RuntimeError):
    pass


def why_not() -> str | None:
    """Why this machine cannot make test hosts, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root: run `sudo make test-cluster`"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed: apt-get install iproute2"
    probe = f"shlprobe{secrets.token_hex(3)}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"`ip netns add` failed here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


@dataclass
class Host:
    name: str
    ns: str
    ip: str
    veth: str  # the machine's end, on the bridge
    procs: list[subprocess.Popen] = field(default_factory=list)


class NetLab:
    def __init__(self, workdir: Path, net: int | None = None) -> None:
        self.tag = secrets.token_hex(2)
        self.net = net if net is not None else 100 + secrets.randbelow(150)
        self.bridge = f"shlbr{self.tag}"
        self.workdir = workdir
        self.hosts: dict[str, Host] = {}
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"10.77.{self.net}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add(self, name: str) -> Host:
        index = len(self.hosts) + 2
        ns = f"shl{self.tag}-{name}"
        veth, peer = f"shl{self.tag}h{index}", f"shl{self.tag}n{index}"
        host = Host(name, ns, f"10.77.{self.net}.{index}", veth)
        self.hosts[name] = host
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("-n", ns, "link", "set", peer, "name", "eth0")
        _ip("-n", ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        return host

    def run(self, host: Host, name: str, argv: list[str], env: dict | None = None):
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", host.ns, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        host.procs.append(proc)
        return proc

    def cut(self, host: Host) -> None:
        _ip("link", "set", host.veth, "down")

    def heal(self, host: Host) -> None:
        _ip("link", "set", host.veth, "up")

    def close(self) -> list[str]:
        """Stop every process started here, then remove the namespaces and the bridge."""
        problems = []
        for host in self.hosts.values():
            for proc in reversed(host.procs):
                if proc.poll() is None and not servers.stop_pid(proc.pid, timeout=5):
                    problems.append(f"{host.name}: pid {proc.pid} did not stop")
        for host in self.hosts.values():
            for cmd in (["ip", "netns", "del", host.ns], ["ip", "link", "del", host.veth]):
                subprocess.run(cmd, capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        if f"shl{self.tag}-" in left:
            problems.append(f"namespaces left behind: {left}")
        return problems
