"""The schema layer's strictness and bounds (kacheryfs/http/schemas.py), without a node."""

from __future__ import annotations

import json

import pytest

from kacheryfs.http import schemas as s

SHA1 = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"


@pytest.mark.parametrize("raw, words", [
    (b'{"feedId":"%s","subfeedHash":"%s","position":true}' % (b"ab" * 32, SHA1.encode()), "invalid position"),
    (b'{"feedId":"%s","subfeedHash":"%s","position":3.0}' % (b"ab" * 32, SHA1.encode()), "got `float`"),
    (b'{"feedId":"%s","subfeedHash":"%s","waitMsec":NaN}' % (b"ab" * 32, SHA1.encode()), "not JSON"),
    (b'{"feedId":"%s","subfeedHash":"%s","waitMsec":1e999999}' % (b"ab" * 32, SHA1.encode()), "out of range"),
    (b'{"feedId":"%s","subfeedHash":"%s","waitMsec":-1}' % (b"ab" * 32, SHA1.encode()), "invalid wait msec"),
    (b'{"feedId":"zz","subfeedHash":"%s"}' % SHA1.encode(), "invalid feed id"),
    (b'{"subfeedHash":"%s"}' % SHA1.encode(), "feedId"),
    (b"[]", "Expected a JSON object"),
    (b"\xff", "not JSON"),
])
def test_strict_decoding_names_the_field(raw, words):
    with pytest.raises(s.SchemaError, match=words.replace("`", ".")):
        s.decode(raw, s.PeerFeedMessages)


def test_valid_bodies_and_unknown_fields():
    body = s.decode(b'{"feedId":"%s","subfeedHash":"%s","waitMsec":5,"extra":[1]}' % (b"AB" * 32, SHA1.encode()),
                    s.PeerFeedMessages)
    assert body.waitMsec == 5.0 and body.position == 0
    assert s.decode(b"", s.AnyObject) == s.AnyObject()


def test_depth_is_bounded_before_decoding():
    deep = b'{"key":' + b"[" * 3000 + b"]" * 3000 + b"}"
    with pytest.raises(s.SchemaError, match="nests deeper"):
        s.decode(deep, s.MutableKey)
    ok = {"key": json.loads("[" * (s.MAX_DEPTH - 1) + "]" * (s.MAX_DEPTH - 1))}
    assert s.decode(json.dumps(ok).encode(), s.MutableKey).key == ok["key"]
    # brackets inside strings (escaped quotes included) do not count
    text = json.dumps({"key": '\\"[[[' * 1000, "value": "{" * 5000}).encode()
    assert s.json_depth(text) <= s.MAX_DEPTH
    assert s.json_depth(b"[" * 100 + b"]" * 100) == 100


def test_size_is_bounded():
    with pytest.raises(s.SchemaError, match="too large"):
        s.decode(b"{}" + b" " * 100, s.AnyObject, max_bytes=10)
