"""Hostile bodies against every JSON route of a real node: no 5xx, no dropped connection, the node
stays up.

Every route of the client API (with the node's extensions, feeds and tasks), /loadFile,
/downloadFileData and the peer API (signed by a member, so the bodies get past the signature check)
gets hypothesis-generated bodies: objects with the route's own field names holding JSON values of
every shape, any JSON value, raw bytes; then a fixed list of known-bad bodies (NaN, 1e999999, a few
thousand nesting levels, invalid UTF-8, ...) on every route, and an oversized body. Deterministic
(derandomized) and bounded: MAX_EXAMPLES generated bodies in all. Waits in bodies are clamped to
0.2 s so long polls stay short. The figures are printed (`pytest -s`) and carried in the assertion.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from typing import Any

import msgspec
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kacheryfs.http.client_routes import JSON_ROUTES
from kacheryfs.http.peer_routes import PEER_JSON_ROUTES
from kacheryfs.http.schemas import MAX_MSEC
from kacheryfs.security.keys import load_or_create_node_keys
from kacheryfs.security.peer_auth import sign_request
from tests.support.network import write_config
from tests.support.nodeproc import running_node

MAX_EXAMPLES = 1200
CHANNEL = "fuzzchan"
SHA1 = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
STREAM_ROUTES = {"/loadFile": "LoadFile", "/downloadFileData": "DownloadFileData"}
ROUTES = sorted([*JSON_ROUTES, *STREAM_ROUTES, *PEER_JSON_ROUTES])
WAIT_FIELDS = {"waitMsec", "timeoutMsec"}
PLAUSIBLE = [SHA1, "ab" * 32, "0" * 40, CHANNEL, "ch1", "*local*", "pure-calculation", "query", "action",
             "finished", "error", "running", "test.add", "/etc/hostname", "/", "", ".", "..", "a/b",
             "0" * 32, "x" * 5000, -1, 0, 1, 2**53, 2**64, 3.0, 0.5, 1e308, -0.0, True, False, None]
SPECIAL = [b"", b"null", b"[]", b"{}", b"1", b'"s"', b"NaN", b"Infinity", b"-Infinity", b"1e999999",
           b'{"a":NaN}', b'{"waitMsec":1e999999}', b'{"timeoutMsec":NaN}', b"\xff\xfe\xfd",
           b'{"key":"\xff"}', b"{" * 4000, b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000,
           b'{"key":' + b"[" * 3000 + b"]" * 3000 + b"}", b'{"fileKey":' + b"[" * 2000 + b"]" * 2000 + b"}",
           b'{"fileKey":null}', b'{"fileKey":{"sha1":null}}', b'{"fileKey":{"sha1":"%s"},"startByte":1e999999}'
           % SHA1.encode(), b'{"fileKey":{"sha1":"%s"},"startByte":true,"endByte":3}' % SHA1.encode(),
           b'{"messages":[{"n":NaN}]}', b'{"taskKwargs":' + b'{"a":' * 200 + b"1" + b"}" * 200 + b"}",
           b'{"size":3.0}', b'{"position":true}', b"\x00" * 100, b'{"a":1}garbage', b'{"a":"\\ud800"}']


def _field_names(schema: Any, depth: int = 0) -> set[str]:
    names: set[str] = set()
    if depth > 3 or not isinstance(schema, type) or not issubclass(schema, msgspec.Struct):
        return names
    hints = msgspec.structs.fields(schema)
    for f in hints:
        names.add(f.encode_name)
        for t in getattr(f.type, "__args__", ()) + (f.type,):
            names |= _field_names(t, depth + 1)
    return names


def _schema(route: str) -> Any:
    if route in JSON_ROUTES:
        return JSON_ROUTES[route][0]
    if route in PEER_JSON_ROUTES:
        return PEER_JSON_ROUTES[route][0]
    from kacheryfs.http import schemas
    return getattr(schemas, STREAM_ROUTES[route])


ALL_FIELDS = sorted(set().union(*(_field_names(_schema(r)) for r in ROUTES)))
leaves = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
          | st.text(max_size=40) | st.sampled_from(PLAUSIBLE))
json_values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(ALL_FIELDS) | st.text(max_size=8), inner, max_size=4), max_leaves=20)


@st.composite
def route_and_body(draw: Any) -> tuple[str, bytes]:
    route = draw(st.sampled_from(ROUTES))
    names = sorted(_field_names(_schema(route)))
    shape = draw(st.sampled_from(["object", "object", "object", "any", "raw"]))
    if shape == "raw":
        return route, draw(st.binary(max_size=300))
    if shape == "object":
        value: Any = draw(st.fixed_dictionaries({}, optional={n: json_values for n in names}))
    else:
        value = draw(json_values)
    return route, json.dumps(_clamp_waits(value)).encode()


def _clamp_waits(value: Any) -> Any:
    """Long polls of up to a day are valid: keep the fuzz quick by clamping valid waits to 0.2 s."""
    if isinstance(value, dict):
        return {k: (0.2 if k in WAIT_FIELDS and isinstance(v, (int, float)) and not isinstance(v, bool)
                    and 200 < v <= MAX_MSEC else _clamp_waits(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_clamp_waits(v) for v in value]
    return value


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.server_errors: list[str] = []
        self.statuses: Counter[int] = Counter()

    def check(self, node: Any, keys: Any, route: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json"}
        if route.startswith("/peer/"):
            headers.update(sign_request(keys, CHANNEL, "POST", route, body))
        else:
            headers.update(node.headers())
        self.sent += 1
        try:
            r = requests.post(node.url + route, data=body, headers=headers, timeout=30)
            r.content         # noqa: B018 - read streamed answers to their end
        except requests.RequestException as e:
            self.server_errors.append(f"{route} {body[:80]!r}: connection failed: {e}")
            return
        self.statuses[r.status_code] += 1
        if r.status_code >= 500:
            self.server_errors.append(f"{route} {body[:80]!r}: HTTP {r.status_code} {r.text[:200]}")


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "fuzzer").mkdir()
    keys = load_or_create_node_keys(root / "fuzzer")
    write_config(root / "storage", channel=CHANNEL, members=[keys.public_hex])
    with running_node(root / "storage") as node:
        yield node, keys, Tally()


def test_generated_bodies(fuzzed):
    node, keys, tally = fuzzed

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(route_and_body())
    def one(case: tuple[str, bytes]) -> None:
        tally.check(node, keys, *case)
    one()
    _assert_clean(node, tally, "generated")
    assert tally.statuses[200] > 50 and tally.statuses[400] > 100      # both sides of the schemas reached


def test_known_bad_bodies_on_every_route(fuzzed):
    node, keys, tally = fuzzed
    for route in ROUTES:
        for body in SPECIAL:
            tally.check(node, keys, route, body)
    _assert_clean(node, tally, "known-bad")


def test_oversized_bodies_are_refused_before_they_are_read(fuzzed):
    node, _, tally = fuzzed
    for route in ("/mutable/set", "/loadFile", "/feed/appendMessages"):
        # Declares 300 MB (over the 256 MiB limit) and sends 1 MB: the node answers without waiting.
        with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
            sock.sendall(f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         f"KACHERY-CLIENT-AUTH-CODE: {node.auth_code()}\r\nContent-Length: 300000000\r\n\r\n"
                         .encode() + b"[" * (1 << 20))
            answer = sock.recv(4096)
        tally.sent += 1
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    _assert_clean(node, tally, "oversized")


def _assert_clean(node: Any, tally: Tally, what: str) -> None:
    print(f"\nfuzz ({what}): {tally.sent} bodies sent so far, {len(tally.server_errors)} answered 5xx or dropped; "
          f"statuses {dict(sorted(tally.statuses.items()))}")
    assert node.proc.poll() is None, node.log()[-3000:]
    assert requests.get(node.url + "/probe", timeout=10).status_code == 200
    assert not tally.server_errors, (f"{len(tally.server_errors)} of {tally.sent} bodies failed:\n"
                                     + "\n".join(tally.server_errors[:20]))
