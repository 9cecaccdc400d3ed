"""Who may see the status page, /metrics and the gateway (kacheryfs/http/access.py), on real nodes.

A node started with `--host 0.0.0.0` is asked on 127.0.0.1 only; what matters is the address it
was told to listen on."""

from __future__ import annotations

import requests

from tests.support.network import write_config
from tests.support.nodeproc import running_node

TOKEN = "operator-token-0123456789"
OPEN_PATHS = ("/", "/ui/", "/ui/status.json", "/metrics")


def test_loopback_node_open_to_this_machine_only(tmp_path):
    with running_node(tmp_path / "storage") as node:
        stored = node.post("/store", data=b"abc", headers={"X-Kachery-Name": "a.txt"}).json()
        gateway = f"/sha1/{stored['sha1']}/a.txt"
        for path in (*OPEN_PATHS, gateway):
            assert requests.get(node.url + path, timeout=30).status_code == 200, path
        page = requests.get(node.url + "/ui/", timeout=30).text
        assert node.auth_code() not in page and "startPolling(" in page
        assert "src=" not in page and 'href="http' not in page and "<link" not in page   # nothing from elsewhere
        # A page elsewhere reaching the node through DNS rebinding names another host: refused.
        for path in (*OPEN_PATHS, gateway):
            r = requests.get(node.url + path, headers={"Host": f"evil.example:{node.port}"}, timeout=30)
            assert r.status_code == 403, path
        # Only GET and HEAD are open; everything else still needs the client auth code.
        assert requests.post(node.url + "/metrics", timeout=30).status_code == 403
        assert requests.get(node.url + "/halt", timeout=30).status_code == 403
        assert requests.get(node.url + "/stats", timeout=30).status_code == 403
        assert node.proc.poll() is None


def test_node_beyond_loopback_needs_the_operator_token(tmp_path):
    storage = tmp_path / "storage"
    write_config(storage, node={"status_token": TOKEN})
    with running_node(storage, args=("--host", "0.0.0.0")) as node:
        stored = node.post("/store", data=b"abc", headers={"X-Kachery-Name": "a.txt"}).json()
        for path in OPEN_PATHS:
            assert requests.get(node.url + path, timeout=30).status_code == 403, path
            assert requests.get(node.url + path, params={"token": "wrong-token-0123456789"},
                                timeout=30).status_code == 403, path
            assert requests.get(node.url + path, params={"token": TOKEN}, timeout=30).status_code == 200, path
            assert requests.get(node.url + path, headers={"Authorization": f"Bearer {TOKEN}"},
                                timeout=30).status_code == 200, path
            assert requests.get(node.url + path, headers=node.headers(), timeout=30).status_code == 200, path
        # The gateway is off by default on such a node, token or not.
        gateway = f"{node.url}/sha1/{stored['sha1']}/a.txt"
        assert requests.get(gateway, timeout=30).status_code == 403
        assert requests.get(gateway, params={"token": TOKEN}, timeout=30).status_code == 403


def test_gateway_switch_beyond_loopback(tmp_path):
    storage = tmp_path / "storage"
    write_config(storage, node={"network_gateway": True})
    with running_node(storage, args=("--host", "0.0.0.0")) as node:
        stored = node.post("/store", data=b"abc", headers={"X-Kachery-Name": "a.txt"}).json()
        r = requests.get(f"{node.url}/sha1/{stored['sha1']}/a.txt", timeout=30)
        assert r.status_code == 200 and r.content == b"abc"
        # No token configured: the page stays closed except to holders of the client auth code.
        assert requests.get(node.url + "/ui/", timeout=30).status_code == 403
        assert requests.get(node.url + "/metrics", headers=node.headers(), timeout=30).status_code == 200
