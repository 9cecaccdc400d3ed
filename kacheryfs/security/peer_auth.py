"""Signed peer requests: a node proves who it is with its node key; the server checks channel membership.

Every peer API request carries four headers:

    X-Kachery-Node       the requesting node's id (its ed25519 public key, 64 hex)
    X-Kachery-Channel    the channel it asks in
    X-Kachery-Time       milliseconds since the epoch, within MAX_SKEW_MS of the server's clock
    X-Kachery-Signature  the node's signature (keys.sign_body) of
                         {"channel", "method", "node", "path", "time", "bodySha1"}

The server serves a request only if the channel is configured here with the `serve` role and
the node id is one of its `members`; anything else is 403. Most peer requests are reads and
idempotent, so a replay inside the time window gains nothing a member could not ask for. Requests
that act (/peer/task/request may run an action) carry a one-time "nonce" in their signed body;
the server remembers the nonces it accepted for as long as a signature is valid (NonceGuard), so a
replayed request is refused (403).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping

from kachery_client.errors import AuthError
from kacheryfs.config import NodeConfig
from kacheryfs.security.keys import KeyPair, verify_body

MAX_SKEW_MS = 5 * 60 * 1000
H_NODE, H_CHANNEL, H_TIME, H_SIGNATURE = ("x-kachery-node", "x-kachery-channel", "x-kachery-time",
                                          "x-kachery-signature")


def _claim(channel: str, method: str, node: str, path: str, when: int, body: bytes) -> dict[str, object]:
    return {"channel": channel, "method": method.upper(), "node": node, "path": path, "time": when,
            "bodySha1": hashlib.sha1(body).hexdigest()}


def sign_request(keys: KeyPair, channel: str, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    """Headers for a peer request from the node holding `keys`."""
    when = int(time.time() * 1000)
    signature = keys.sign_body(_claim(channel, method, keys.public_hex, path, when, body))
    return {H_NODE: keys.public_hex, H_CHANNEL: channel, H_TIME: str(when), H_SIGNATURE: signature}


def check_request(config: NodeConfig, headers: Mapping[str, str], method: str, path: str,
                  body: bytes = b"") -> tuple[str, str]:
    """(channel, node id) of a correctly signed request from a member; AuthError otherwise."""
    node, channel = headers.get(H_NODE, ""), headers.get(H_CHANNEL, "")
    when, signature = headers.get(H_TIME, ""), headers.get(H_SIGNATURE, "")
    if not (node and channel and when.isdigit() and signature):
        raise AuthError("peer request without node signature headers")
    ch = config.channel(channel)
    if ch is None or not ch.can("serve"):
        raise AuthError(f"this node does not serve channel {channel!r}")
    if node not in ch.members:
        raise AuthError(f"node {node} is not a member of channel {channel!r}")
    if abs(int(when) - time.time() * 1000) > MAX_SKEW_MS:
        raise AuthError("peer request timestamp too far from this node's clock")
    if not verify_body(node, _claim(channel, method, node, path, int(when), body), signature,
                       accept_legacy=False):
        raise AuthError("bad peer request signature")
    return channel, node


NONCE_MEMORY = 100_000          # nonces remembered at most; beyond that, acting requests are refused


def new_nonce() -> str:
    return secrets.token_hex(16)


class NonceGuard:
    """One-time nonces of acting peer requests, remembered for twice the signature window (a request
    older than MAX_SKEW_MS is refused by its timestamp anyway). Runs on the trio loop only."""

    def __init__(self, memory: int = NONCE_MEMORY):
        self.memory = memory
        self._seen: dict[tuple[str, str], float] = {}     # (node, nonce) -> forget after (monotonic)

    def accept(self, node: str, nonce: str) -> None:
        now = time.monotonic()
        if len(self._seen) >= self.memory:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
            if len(self._seen) >= self.memory:
                raise AuthError("too many acting peer requests in the signature window; try again later")
        key = (node, nonce)
        if key in self._seen and self._seen[key] > now:
            raise AuthError("replayed peer request (its nonce was used before)")
        self._seen[key] = now + 2 * MAX_SKEW_MS / 1000
