import hashlib

import pytest

from kachery_client.canonical_json import canonical_json, canonical_sha1, js_number


@pytest.mark.parametrize("x, text", [
    (1.0, "1"), (-0.0, "0"), (0.5, "0.5"), (1e-7, "1e-7"), (1e-6, "0.000001"), (1.5e-7, "1.5e-7"),
    (123.456, "123.456"), (1e21, "1e+21"), (1e20, "100000000000000000000"), (1.5e300, "1.5e+300"),
    (0.1, "0.1"), (-2.5, "-2.5"), (1e16, "10000000000000000"), (5e-324, "5e-324"), (0.00123, "0.00123"),
    (1.7976931348623157e308, "1.7976931348623157e+308"), (123e-20, "1.23e-18"),
])
def test_js_number(x, text):
    assert js_number(x) == text


def test_canonical_forms():
    assert canonical_json({"t": "é", "e": 1e-7, "x": 1.0}) == '{"e":1e-7,"t":"é","x":1}'
    assert canonical_json({"b": [1, {"d": None, "c": True}], "a": "\n\x01/"}) == \
        '{"a":"\\n\\u0001/","b":[1,{"c":true,"d":null}]}'
    assert canonical_json("\ud800") == '"\\ud800"'
    # UTF-16 order: U+FF01 sorts after U+1F600 (a surrogate pair starting D83D)
    assert canonical_json({"\uff01": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\uff01":1}'


def test_mutable_ids_from_protocol():
    assert canonical_sha1("k") == "ecfbec33b807160cf2758bf3d043e4ec6b39a0a7"
    assert canonical_sha1({"type": "feed_id_for_name", "feed_name": "myfeed"}) == \
        "2fdf1a29c4b33433ed7a33d386f17d3267b99330"
    assert canonical_sha1("k") == hashlib.sha1(b'"k"').hexdigest()
