"""TLS on the bus when configured: an org connects over TLS with its nkey; a plain client cannot."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import urllib.request

import nats
import pytest

from shardline import bus_access, servers
from shardline.bus.connect import connect
from shardline.bus.credentials import ClientAuth
from shardline.config import NatsTLS

pytestmark = pytest.mark.integration


def make_certs(d) -> NatsTLS:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=shardline test CA",
    )
    run(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    )
    return NatsTLS(cert_file=d / "server.pem", key_file=d / "server.key", ca_file=d / "ca.pem")


def connz(monitor: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/connz") as r:
        return r.read()


def test_org_connects_over_tls_and_plain_clients_are_refused(tmp_path):
    tls = make_certs(tmp_path)
    setup = bus_access.provision(tmp_path, ["org1"], tls)
    port, monitor = servers.free_port(), servers.free_port()
    proc = servers.spawn(
        servers.nats_spec(tmp_path / "data" / "nats", port, monitor, setup.config_file),
        tmp_path / "nats.log",
    )
    try:

        async def go():
            auth = ClientAuth("org1", setup.org_seeds["org1"], bus_access.bus_tls(tls))
            nc = await connect(f"tls://127.0.0.1:{port}", "org1-tls", auth)
            # the server's own account of the connection: its TLS version
            conns = json.loads(await asyncio.to_thread(connz, monitor))["connections"]
            tls_ok = any(c.get("name") == "org1-tls" and c.get("tls_version") for c in conns)
            await nc.publish("lookup.requested.org1", b"over tls")
            await nc.flush()
            await nc.close()
            try:
                plain = await nats.connect(
                    f"nats://127.0.0.1:{port}",
                    allow_reconnect=False,
                    connect_timeout=2,
                    nkeys_seed_str=setup.org_seeds["org1"].read_text().strip(),
                )
                await plain.close()
                refused = False
            except Exception:
                refused = True
            try:  # the right seed, but a client that trusts only the system's CAs
                other = await nats.connect(
                    f"tls://127.0.0.1:{port}",
                    allow_reconnect=False,
                    connect_timeout=2,
                    tls=ssl.create_default_context(),
                    nkeys_seed_str=setup.org_seeds["org1"].read_text().strip(),
                )
                await other.close()
                untrusted = False
            except Exception:
                untrusted = True
            return tls_ok, refused, untrusted

        tls_ok, refused, untrusted = asyncio.run(go())
    finally:
        servers.stop_pid(proc.pid)
    assert tls_ok
    assert refused, "a plain-text client was let in"
    assert untrusted, "a client that does not trust the CA connected"
