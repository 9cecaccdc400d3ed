"""Signed peer requests: a node proves who it is with its node key; the server checks channel membership.

Every peer API request carries four headers:

    X-Kachery-Node       the requesting node's id (its ed25519 public key, 64 hex)
    X-Kachery-Channel    the channel it asks in
    X-Kachery-Time       milliseconds since the epoch, within MAX_SKEW_MS of the server's clock
    X-Kachery-Signature  the node's signature (keys.sign_body) of
                         {"channel", "method", "node", "path", "time", "bodySha1"}

The server serves a request only if the channel is configured here with the `serve` role and
the node id is one of its `members`; anything else is 403. Peer requests are reads and
idempotent, so a replay inside the time window gains nothing a member could not ask for.
"""

from __future__ import annotations

import hashlib
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
