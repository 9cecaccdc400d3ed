"""The node configuration file: what it accepts, and the errors it gives."""

import pytest

from kacheryfs.config import ConfigError, load_config, parse_size

GOOD = """
[node]
peer_listen = "0.0.0.0:20432"
cache_max_bytes = "1.5G"

[[channel]]
name = "lab"
peers = ["http://10.0.0.2:20432/"]
members = ["%s"]

[channel.bucket]
bucket = "b"
prefix = "p"
endpoint_url = "http://127.0.0.1:9000"
""" % ("ab" * 32)


def test_a_full_config(tmp_path):
    p = tmp_path / "kacheryfs.toml"
    p.write_text(GOOD)
    c = load_config(p)
    assert c.peer_listen == ("0.0.0.0", 20432) and c.cache_max_bytes == int(1.5 * (1 << 30))
    ch = c.require_channel("lab")
    assert ch.peers == ("http://10.0.0.2:20432",) and ch.can("serve") and ch.bucket is not None
    assert ch.bucket.key_for("0123456789" * 4) == "p/sha1/01/23/45/" + "0123456789" * 4


def test_no_file_is_a_local_node(tmp_path):
    assert load_config(tmp_path / "absent.toml").channels == ()
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml", required=True)


@pytest.mark.parametrize("text, message", [
    ("[[channel]]\nname = 'x'\n", "3-40 characters"),
    ("[[channel]]\nname = 'lab'\nroles = ['fly']\n", "unknown role"),
    ("[[channel]]\nname = 'lab'\npeers = ['ftp://x']\n", "not an http"),
    ("[[channel]]\nname = 'lab'\nmembers = ['nope']\n", "not a node id"),
    ("[[channel]]\nname = 'lab'\n[channel.bucket]\nprefix = 'p'\n", "bucket.bucket"),
    ("[[channel]]\nname = 'lab'\nupload_all = true\n", "needs a bucket"),
    ("[[channel]]\nname = 'lab'\n[[channel]]\nname = 'lab'\n", "defined twice"),
    ("[node]\ncache_max_bytes = 'lots'\n", "expected a size"),
    ("[node]\npeer_listen = 'nowhere'\n", "peer_listen"),
    ("[node]\nspeed = 3\n", "unknown setting"),
    ("this is not toml", "kacheryfs.toml"),
])
def test_mistakes_are_named(tmp_path, text, message):
    p = tmp_path / "kacheryfs.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(p)
    assert str(p) in str(e.value)


def test_sizes():
    assert parse_size(1000, "x") == 1000 and parse_size("2M", "x") == 2 << 20 and parse_size("3 GiB", "x") == 3 << 30
