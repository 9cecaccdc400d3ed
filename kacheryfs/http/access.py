"""Who may see the status page, the metrics and the gateway (docs/PROTOCOL.md section 16.4).

The client auth middleware (app.py) lets exactly the GET and HEAD requests of `is_open_read`
through without the client auth code; none of them changes state. Their handlers then ask
`Access`:

* node listening on loopback (the default `--host 127.0.0.1`): anyone on this machine may look,
  as with an IPFS gateway knowing a hash is the capability to read it. The Host header must name
  a loopback address too, so a web page cannot reach the node through DNS rebinding.
* node listening on another address: the page, /ui/status.json and /metrics need the operator's
  `[node] status_token` (`?token=` or `Authorization: Bearer`), or the client auth code; the
  gateway answers only if `[node] network_gateway = true`.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from starlette.requests import Request

from kacheryfs.node import Node

OPEN_PAGES = frozenset({"/", "/ui", "/ui/", "/ui/status.json", "/metrics"})
GATEWAY_PREFIX = "/sha1/"
AUTH_HEADER = "kachery-client-auth-code"


def is_open_read(scope: dict[str, Any]) -> bool:
    """Requests the client auth middleware lets through: their handlers check `Access` themselves."""
    path = scope["path"]
    return scope["method"] in ("GET", "HEAD") and (path in OPEN_PAGES or path.startswith(GATEWAY_PREFIX))


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Access:
    def __init__(self, node: Node, listen_host: str):
        self.node = node
        self.on_loopback = is_loopback(listen_host)

    def may_view(self, request: Request) -> bool:
        """The status page, its JSON and /metrics."""
        if self.on_loopback:
            return is_loopback(request.url.hostname)
        token = self.node.config.status_token
        offered = request.query_params.get("token") or _bearer(request.headers.get("authorization"))
        if token and offered and hmac.compare_digest(offered.encode(), token.encode()):
            return True
        return self.node.auth.accepts(request.headers.get(AUTH_HEADER))

    def may_use_gateway(self, request: Request) -> bool:
        if self.on_loopback:
            return is_loopback(request.url.hostname)
        return self.node.config.network_gateway

    def refusal(self) -> str:
        if self.on_loopback:
            return "the status page, metrics and gateway answer only to a loopback Host (127.0.0.1, localhost)"
        return ("this node listens beyond loopback: give the operator's [node] status_token as ?token=... "
                "or 'Authorization: Bearer ...'")


def _bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None
