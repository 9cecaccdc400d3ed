import base64

from kacheryfs.security.keys import (
    KeyPair,
    load_or_create_node_keys,
    parse_private_pem,
    private_pem,
    verify_body,
)


def test_sign_and_verify_body():
    kp = KeyPair.generate()
    body = {"message": {"a": 1}, "messageNumber": 0, "timestamp": 1}
    sig = kp.sign_body(body)
    assert len(sig) == 128
    assert verify_body(kp.public_hex, body, sig)
    assert not verify_body(kp.public_hex, {**body, "messageNumber": 1}, sig)
    legacy = kp.sign(b'{"a":1}')
    assert verify_body(kp.public_hex, {"a": 1}, legacy)
    assert not verify_body(kp.public_hex, {"a": 1}, legacy, accept_legacy=False)


def test_pem_roundtrip_and_node_keys(tmp_path):
    kp = KeyPair.generate()
    pem = private_pem(kp.seed)
    assert parse_private_pem(pem) == kp.seed
    assert base64.b64decode(pem.split("\n")[1]).hex().startswith("302e020100300506032b657004220420")
    a = load_or_create_node_keys(tmp_path)
    assert (tmp_path / "private.pem").stat().st_mode & 0o777 == 0o600
    assert load_or_create_node_keys(tmp_path) == a
