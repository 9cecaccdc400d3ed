"""Feeds over a real feeds.db and mutables.db in a temporary directory (no node process)."""

import hashlib
import json
import sqlite3
import threading

import pytest

from kachery_client.canonical_json import canonical_json
from kachery_client.errors import KacheryError, UsageError
from kacheryfs.feeds.mutables import Mutables
from kacheryfs.feeds.store import (
    FeedIntegrityError,
    FeedNotWriteableError,
    Feeds,
    feed_config_key,
    feed_name_key,
)
from kacheryfs.security.keys import KeyPair, verify, verify_body

SF = hashlib.sha1(b"sf1").hexdigest()
SF2 = hashlib.sha1(b"sf2").hexdigest()


def open_feeds(d):
    d.mkdir(parents=True, exist_ok=True)
    return Feeds(d / "feeds.db", Mutables(d / "mutables.db"))


@pytest.fixture
def feeds(tmp_path):
    return open_feeds(tmp_path / "a")


def check_chain(feed_id, envelopes):
    previous = None
    for i, e in enumerate(envelopes):
        body = e["body"]
        assert body["messageNumber"] == i
        assert body.get("previousSignature") == previous
        assert ("previousSignature" in body) == (i > 0)
        assert isinstance(body["timestamp"], int)
        assert verify_body(feed_id, body, e["signature"], accept_legacy=False)
        previous = e["signature"]


def test_schema_is_the_originals(feeds):
    db = sqlite3.connect(feeds.db_path)
    sql = {name: text for name, text in db.execute("SELECT name, sql FROM sqlite_master WHERE type='table'")}
    assert set(sql) == {"feeds", "subfeeds", "subfeedMessages"}
    assert all("WITHOUT ROWID" in text for text in sql.values())
    assert "ON DELETE CASCADE" in sql["subfeedMessages"] and "ON DELETE CASCADE" in sql["subfeeds"]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_append_signs_a_chain(feeds):
    fid = feeds.create_feed("myfeed")
    assert feeds.is_writeable(fid) and feeds.get_feed_id("myfeed") == fid
    assert feeds.get_feed_id("other") is None
    assert feeds.append(fid, SF, [{"a": 1}, {"b": 2}]) == 2
    assert feeds.append(fid, SF, [{"c": 3}]) == 3
    assert feeds.num_messages(fid, SF) == 3 and feeds.num_messages(fid, SF2) == 0
    assert feeds.get_messages(fid, SF) == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert feeds.get_messages(fid, SF, position=1, max_num=1) == [{"b": 2}]
    assert feeds.get_messages(fid, SF, position=3) == [] and feeds.get_messages(fid, SF2) == []
    signed = feeds.get_messages(fid, SF, signed=True)
    check_chain(fid, signed)
    # stored text: canonical JSON of the whole envelope; key in mutables.db as the original keeps it
    rows = sqlite3.connect(feeds.db_path).execute("SELECT message FROM subfeedMessages ORDER BY position").fetchall()
    assert [r[0] for r in rows] == [canonical_json(e) for e in signed]
    found, config = feeds.mutables.get(feed_config_key(fid))
    assert found and KeyPair.from_seed_hex(config["privateKey"]).public_hex == fid and config["feedId"] == fid
    assert feeds.mutables.get(feed_name_key("myfeed")) == (True, fid)


def test_numbers_and_unicode_follow_canonical_json(feeds):
    fid = feeds.create_feed()
    feeds.append(fid, SF, [{"t": "é", "e": 1e-7, "x": 1.0}])
    [msg] = feeds.get_messages(fid, SF)
    assert msg == {"t": "é", "e": 1e-7, "x": 1} and type(msg["x"]) is int
    [env] = feeds.get_messages(fid, SF, signed=True)
    assert verify_body(fid, env["body"], env["signature"], accept_legacy=False)
    python_text = json.dumps(env["body"], sort_keys=True, separators=(",", ":"))    # 1e-07, \u00e9
    assert not verify(fid, hashlib.sha1(python_text.encode()).digest(), env["signature"])


def test_bad_messages_are_usage_errors(feeds):
    fid = feeds.create_feed()
    for bad in ([1], ["x"], [[1, 2]], [None], [{"n": float("nan")}]):
        with pytest.raises(UsageError):
            feeds.append(fid, SF, bad)
    with pytest.raises(UsageError):
        feeds.append("zz", SF, [{}])
    with pytest.raises(UsageError):
        feeds.append(fid, "x" * 40, [{}])
    assert feeds.num_messages(fid, SF) == 0
    with pytest.raises(FeedNotWriteableError):
        feeds.append("ab" * 32, SF, [{"a": 1}])


def test_concurrent_appends_keep_one_chain(feeds):
    fid = feeds.create_feed()

    def worker(k):
        for i in range(20):
            feeds.append(fid, SF, [{"k": k, "i": i}, {"k": k, "i": i, "second": True}])
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    signed = feeds.get_messages(fid, SF, signed=True)
    assert len(signed) == 160
    check_chain(fid, signed)
    for first, second in zip(signed[::2], signed[1::2], strict=True):     # each batch stays contiguous
        assert second["body"]["message"] == {**first["body"]["message"], "second": True}


def test_import_replicates_verified_messages(tmp_path):
    owner, reader = open_feeds(tmp_path / "owner"), open_feeds(tmp_path / "reader")
    fid = owner.create_feed()
    owner.append(fid, SF, [{"i": i} for i in range(5)])
    envelopes = owner.get_messages(fid, SF, signed=True)
    assert reader.import_messages(fid, SF, envelopes[:3]) == 3
    assert reader.import_messages(fid, SF, envelopes) == 2          # overlap skipped, rest appended
    assert reader.import_messages(fid, SF, envelopes) == 0          # idempotent
    assert reader.get_messages(fid, SF) == [{"i": i} for i in range(5)]
    assert reader.get_messages(fid, SF, signed=True) == envelopes
    assert not reader.is_writeable(fid)
    with pytest.raises(FeedNotWriteableError):
        reader.append(fid, SF, [{"x": 1}])
    owner.append(fid, SF, [{"i": 5}])
    assert reader.import_messages(fid, SF, owner.get_messages(fid, SF, position=5, signed=True)) == 1
    check_chain(fid, reader.get_messages(fid, SF, signed=True))
    # a reader restarted from disk re-verifies and keeps serving them
    assert open_feeds(tmp_path / "reader").get_messages(fid, SF, signed=True) == owner.get_messages(fid, SF, signed=True)


def _tampered(envelopes, i, **body_changes):
    out = json.loads(json.dumps(envelopes))
    out[i]["body"].update(body_changes)
    return out


def test_import_refuses_forged_tampered_and_out_of_order(tmp_path):
    owner, reader = open_feeds(tmp_path / "owner"), open_feeds(tmp_path / "reader")
    fid = owner.create_feed()
    owner.append(fid, SF, [{"i": i} for i in range(4)])
    good = owner.get_messages(fid, SF, signed=True)

    other = KeyPair.generate()
    forged = json.loads(json.dumps(good[:1]))
    forged[0]["signature"] = other.sign_body(forged[0]["body"])
    not_envelopes = [[{"i": 0}], [{"body": {"message": {}}}], ["text"], [{"body": good[0]["body"], "signature": "ab"}]]
    cases = [
        _tampered(good, 1, message={"i": 100}),                 # content changed, signature kept
        _tampered(good, 0, timestamp=1),
        forged,                                                 # signed by another key
        [good[0], good[2]],                                     # gap
        [good[1]],                                              # does not start at 0
        _tampered(good, 1, previousSignature="0" * 128),        # chain broken
        *not_envelopes,
    ]
    for bad in cases:
        with pytest.raises(FeedIntegrityError):
            reader.import_messages(fid, SF, bad)
        assert reader.num_messages(fid, SF) == 0               # nothing of a refused batch is kept
    assert reader.import_messages(fid, SF, good[:2]) == 2
    # a message for a held position with another signature is a conflicting history
    conflicting = json.loads(json.dumps(good[1]))
    conflicting["signature"] = good[2]["signature"]
    with pytest.raises(FeedIntegrityError):
        reader.import_messages(fid, SF, [conflicting, good[2]])
    with pytest.raises(FeedIntegrityError):                    # signed for another feed id
        reader.import_messages("ab" * 32, SF, good[:1])
    assert reader.get_messages(fid, SF, signed=True) == good[:2]
    assert issubclass(FeedIntegrityError, KacheryError)


def test_owned_feed_is_never_imported_into(feeds):
    fid = feeds.create_feed()
    feeds.append(fid, SF, [{"a": 1}])
    envelopes = feeds.get_messages(fid, SF, signed=True)
    with pytest.raises(FeedIntegrityError):
        feeds.import_messages(fid, SF2, envelopes)
    assert feeds.num_messages(fid, SF2) == 0


def test_delete_cascades_and_is_immediate(feeds):
    fid = feeds.create_feed("gone")
    keep = feeds.create_feed()
    feeds.append(fid, SF, [{"a": 1}])
    feeds.append(fid, SF2, [{"b": 1}])
    feeds.append(keep, SF, [{"k": 1}])
    assert feeds.num_messages(fid, SF) == 1                     # cached state
    # from another thread, i.e. another connection: foreign keys must be on there too
    t = threading.Thread(target=feeds.delete_feed, args=(fid,))
    t.start()
    t.join(timeout=30)
    assert feeds.num_messages(fid, SF) == 0 and feeds.get_messages(fid, SF2) == []
    assert not feeds.is_writeable(fid) and feeds.get_feed_id("gone") is None
    assert feeds.mutables.get(feed_config_key(fid)) == (False, None)
    db = sqlite3.connect(feeds.db_path)
    for table in ("feeds", "subfeeds", "subfeedMessages"):
        assert db.execute(f"SELECT COUNT(*) FROM {table} WHERE feedId = ?", (fid,)).fetchone()[0] == 0
    assert feeds.get_messages(keep, SF) == [{"k": 1}]
    assert feeds.delete_feed(fid) is False


def _original_store(d, keys, messages, *, legacy_at=None, spaced_at=None):
    """A storage dir as the original daemon leaves it: its schema, envelopes, key in mutables."""
    d.mkdir(parents=True)
    db = sqlite3.connect(d / "feeds.db")
    db.executescript(
        "CREATE TABLE feeds (feedId TEXT NOT NULL PRIMARY KEY) WITHOUT ROWID;"
        "CREATE TABLE subfeeds (feedId TEXT NOT NULL, subfeedHash TEXT NOT NULL, PRIMARY KEY(feedId, subfeedHash), "
        "FOREIGN KEY (feedId) REFERENCES feeds(feedId) ON DELETE CASCADE) WITHOUT ROWID;"
        "CREATE TABLE subfeedMessages (feedId TEXT NOT NULL, subfeedHash TEXT NOT NULL, position INTEGER NOT NULL, "
        "message TEXT NOT NULL, PRIMARY KEY(feedId, subfeedHash, position), FOREIGN KEY (feedId, subfeedHash) "
        "REFERENCES subfeeds(feedId, subfeedHash) ON DELETE CASCADE) WITHOUT ROWID;")
    fid = keys.public_hex
    db.execute("INSERT INTO feeds VALUES (?)", (fid,))
    db.execute("INSERT INTO subfeeds VALUES (?, ?)", (fid, SF))
    previous = None
    for i, m in enumerate(messages):
        body = {"message": m, "messageNumber": i, "timestamp": 1600000000000 + i}
        if previous:
            body["previousSignature"] = previous
        previous = keys.sign(canonical_json(body).encode()) if i == legacy_at else keys.sign_body(body)
        envelope = {"signature": previous, "body": body}
        text = json.dumps(envelope) if i == spaced_at else canonical_json(envelope)   # any JSON form reads
        db.execute("INSERT INTO subfeedMessages VALUES (?, ?, ?, ?)", (fid, SF, i, text))
    db.commit()
    Mutables(d / "mutables.db").set(feed_config_key(fid), {"feedId": fid, "privateKey": keys.seed_hex})
    return fid


def test_adopts_an_original_storage_dir(tmp_path):
    keys = KeyPair.generate()
    fid = _original_store(tmp_path / "orig", keys, [{"i": 0}, {"i": 1}, {"i": 2}], legacy_at=1, spaced_at=2)
    feeds = open_feeds(tmp_path / "orig")
    assert feeds.is_writeable(fid)
    assert feeds.get_messages(fid, SF) == [{"i": 0}, {"i": 1}, {"i": 2}]       # legacy signature read
    feeds.append(fid, SF, [{"i": 3}])                                           # the chain continues
    signed = feeds.get_messages(fid, SF, signed=True)
    assert signed[3]["body"]["previousSignature"] == signed[2]["signature"]
    assert verify_body(fid, signed[3]["body"], signed[3]["signature"], accept_legacy=False)


def test_unverifiable_stored_messages_are_never_served(tmp_path):
    keys = KeyPair.generate()
    fid = _original_store(tmp_path / "bad", keys, [{"i": i} for i in range(4)])
    db = sqlite3.connect(tmp_path / "bad" / "feeds.db")
    text = db.execute("SELECT message FROM subfeedMessages WHERE position = 2").fetchone()[0]
    db.execute("UPDATE subfeedMessages SET message = ? WHERE position = 2",
               (text.replace('"i":2', '"i":200'),))
    db.commit()
    feeds = open_feeds(tmp_path / "bad")
    assert feeds.get_messages(fid, SF) == [{"i": 0}, {"i": 1}]
    assert feeds.num_messages(fid, SF) == 2
    with pytest.raises(FeedIntegrityError):                      # never re-signs over stored messages
        feeds.append(fid, SF, [{"i": 2}])
    assert feeds.num_messages(fid, SF) == 2
