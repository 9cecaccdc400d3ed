"""Feeds: signed append-only logs in <storage>/feeds.db (docs/PROTOCOL.md sections 8.4 and 8.5).

The original schema, so that original storage directories are adopted as they are:
    feeds(feedId)                                            WITHOUT ROWID
    subfeeds(feedId, subfeedHash)          FK -> feeds       WITHOUT ROWID, ON DELETE CASCADE
    subfeedMessages(feedId, subfeedHash, position, message)  WITHOUT ROWID, ON DELETE CASCADE
`message` holds the canonical JSON of the whole envelope {"body": ..., "signature": ...}.
Feed private keys live where the original keeps them: the mutables.db record
{"feedId": id, "type": "feedConfig"} -> {"feedId": id, "privateKey": <seed hex>}.

Integrity: a subfeed read from the database for the first time is verified message by message
(signature with public key = feed id, numbering 0..n-1, previousSignature chain); only the
verified prefix is ever returned. Per subfeed the verified count and last signature are then
kept in memory, and every append (signed here) or import (verified here) extends them.

Synchronous: the node calls this from trio.to_thread (see service.py for the async layer).
One SQLite connection per thread; writes to one feed are serialised by a per-feed lock, which
also covers the check-sign-insert sequence of each of its subfeeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kachery_client.canonical_json import canonical_json
from kachery_client.errors import KacheryError, UsageError
from kacheryfs.feeds.mutables import Mutables
from kacheryfs.security.keys import KeyPair, verify_body
from kacheryfs.sqlite_db import ThreadLocalDB

log = logging.getLogger(__name__)

FEED_ID_RE = re.compile(r"^[0-9a-f]{64}$")
SUBFEED_HASH_RE = re.compile(r"^[0-9a-f]{40}$")
SIGNATURE_RE = re.compile(r"^[0-9a-f]{128}$")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS feeds (feedId TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS subfeeds (feedId TEXT NOT NULL, subfeedHash TEXT NOT NULL, "
    "PRIMARY KEY (feedId, subfeedHash), "
    "FOREIGN KEY (feedId) REFERENCES feeds (feedId) ON DELETE CASCADE) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS subfeedMessages (feedId TEXT NOT NULL, subfeedHash TEXT NOT NULL, "
    "position INTEGER NOT NULL, message TEXT NOT NULL, PRIMARY KEY (feedId, subfeedHash, position), "
    "FOREIGN KEY (feedId, subfeedHash) REFERENCES subfeeds (feedId, subfeedHash) ON DELETE CASCADE) "
    "WITHOUT ROWID",
)


class FeedIntegrityError(KacheryError):
    """Feed messages that do not verify (forged, tampered, out of order, or conflicting)."""


class FeedNotWriteableError(UsageError):
    """Appending to a feed whose private key this node does not hold."""


def feed_config_key(feed_id: str) -> dict[str, str]:
    return {"feedId": feed_id, "type": "feedConfig"}


def feed_name_key(name: str) -> dict[str, str]:
    """The node-side name record of the original daemon (the client keeps its own, PROTOCOL 8.5)."""
    return {"feedName": name, "type": "feedIdForName"}


def check_feed_id(value: Any) -> str:
    if not isinstance(value, str) or not FEED_ID_RE.match(value.lower()):
        raise UsageError(f"invalid feed id {value!r}: expected 64 hexadecimal digits")
    return value.lower()


def check_subfeed_hash(value: Any) -> str:
    if not isinstance(value, str) or not SUBFEED_HASH_RE.match(value.lower()):
        raise UsageError(f"invalid subfeed hash {value!r}: expected 40 hexadecimal digits")
    return value.lower()


def message_text(message: Any) -> str:
    """The canonical JSON of a message to append. Parsing it back gives the message as the
    original stores it (numbers after a JSON round trip: 1.0 -> 1)."""
    if not isinstance(message, dict):
        raise UsageError(f"a feed message must be a JSON object, not {type(message).__name__}")
    try:
        return canonical_json(message)
    except (TypeError, ValueError) as e:
        raise UsageError(f"a feed message must be plain JSON: {e}") from None


class _Verifier:
    """Signature checks for one feed (docs/PROTOCOL.md 8.3), with its public key parsed once."""

    def __init__(self, feed_id: str):
        self.feed_id = feed_id
        try:
            self._key: Ed25519PublicKey | None = Ed25519PublicKey.from_public_bytes(bytes.fromhex(feed_id))
        except ValueError:
            self._key = None

    def verify(self, body: dict[str, Any], signature: str, body_text: str | None = None) -> bool:
        """`body_text`, when given, is the stored canonical text of `body`: hashed as it is, which
        saves re-serialising; any other form falls back to the full rule (legacy included)."""
        if self._key is None:
            return False
        if body_text is not None:
            try:
                self._key.verify(bytes.fromhex(signature), hashlib.sha1(body_text.encode("utf-8")).digest())
                return True
            except (InvalidSignature, ValueError):
                pass
        return verify_body(self.feed_id, body, signature)


_Row = tuple[str, str, int, str]       # feedId, subfeedHash, position, envelope text


@dataclass
class _SubfeedState:
    count: int                      # messages 0..count-1 verified and committed
    last_signature: str | None      # signature of message count-1


class Feeds:
    def __init__(self, db_path: Path, mutables: Mutables):
        self.db_path = db_path
        self.mutables = mutables
        self._locks_guard = threading.Lock()
        self._feed_locks: dict[str, threading.RLock] = {}
        self._states: dict[str, dict[str, _SubfeedState]] = {}   # feed id -> subfeed hash -> state
        self._keys: dict[str, KeyPair] = {}
        self._signers: dict[str, Ed25519PrivateKey] = {}
        # FULL: a signed message, once returned, must never be lost and re-signed differently.
        # foreign_keys is per connection: deletes cascade (the original's defect 12).
        self.db = ThreadLocalDB(db_path, synchronous="FULL", pragmas=("PRAGMA foreign_keys=ON",),
                                schema=_SCHEMA)
        self._conn = self.db.conn

    def _lock(self, feed_id: str) -> threading.RLock:
        with self._locks_guard:
            lock = self._feed_locks.get(feed_id)
            if lock is None:
                lock = self._feed_locks[feed_id] = threading.RLock()
            return lock

    # ---- feeds --------------------------------------------------------------------------

    def create_feed(self, name: str | None = None) -> str:
        if name is not None and not (isinstance(name, str) and 1 <= len(name) <= 100):
            raise UsageError("a feed name is a string of 1 to 100 characters")
        keys = KeyPair.generate()
        feed_id = keys.public_hex
        # The key first: a crash in between leaves a harmless key without a feed, never the reverse.
        self.mutables.set(feed_config_key(feed_id), {"feedId": feed_id, "privateKey": keys.seed_hex})
        self._conn().execute("INSERT OR IGNORE INTO feeds (feedId) VALUES (?)", (feed_id,))
        self._keys[feed_id] = keys
        if name is not None:
            self.mutables.set(feed_name_key(name), feed_id)
        return feed_id

    def delete_feed(self, feed_id: str) -> bool:
        """Remove the feed, its messages (cascade) and its key, at once. False if it was unknown."""
        feed_id = check_feed_id(feed_id)
        with self._lock(feed_id):
            cur = self._conn().execute("DELETE FROM feeds WHERE feedId = ?", (feed_id,))
            had_key = self.mutables.delete(feed_config_key(feed_id))
            self._states.pop(feed_id, None)
            self._keys.pop(feed_id, None)
            self._signers.pop(feed_id, None)
            return cur.rowcount > 0 or had_key

    def get_feed_id(self, name: str) -> str | None:
        found, value = self.mutables.get(feed_name_key(name))
        if not found or not isinstance(value, str) or not self._feed_exists(value):
            return None
        return value

    def _feed_exists(self, feed_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM feeds WHERE feedId = ?", (feed_id,)).fetchone() is not None

    def _key_pair(self, feed_id: str) -> KeyPair | None:
        """The feed's key if this node owns it (the feedConfig record and the feed row exist)."""
        keys = self._keys.get(feed_id)
        if keys is not None:
            return keys
        found, config = self.mutables.get(feed_config_key(feed_id))
        if not found or not isinstance(config, dict) or not self._feed_exists(feed_id):
            return None
        try:
            keys = KeyPair.from_seed_hex(str(config.get("privateKey")))
        except ValueError:
            log.warning("feed %s has an unreadable private key record", feed_id)
            return None
        if keys.public_hex != feed_id:
            log.warning("feed %s: its stored private key belongs to another feed", feed_id)
            return None
        self._keys[feed_id] = keys
        return keys

    def is_writeable(self, feed_id: str) -> bool:
        return self._key_pair(check_feed_id(feed_id)) is not None

    # ---- reading ------------------------------------------------------------------------

    def num_messages(self, feed_id: str, subfeed_hash: str) -> int:
        return self._state(check_feed_id(feed_id), check_subfeed_hash(subfeed_hash)).count

    def get_messages(self, feed_id: str, subfeed_hash: str, position: int = 0, max_num: int = 0,
                     signed: bool = False) -> list[Any]:
        """Verified messages from `position` (at most `max_num` if > 0): the message objects,
        or with `signed` the envelopes {"body": ..., "signature": ...}."""
        feed_id, subfeed_hash = check_feed_id(feed_id), check_subfeed_hash(subfeed_hash)
        if position < 0:
            raise UsageError("position must not be negative")
        count = self._state(feed_id, subfeed_hash).count
        end = count if max_num <= 0 else min(count, position + max_num)
        if position >= end:
            return []
        rows = self._conn().execute(
            "SELECT message FROM subfeedMessages WHERE feedId = ? AND subfeedHash = ? "
            "AND position >= ? AND position < ? ORDER BY position", (feed_id, subfeed_hash, position, end))
        envelopes = [json.loads(r[0]) for r in rows]
        return envelopes if signed else [e["body"]["message"] for e in envelopes]

    def _state(self, feed_id: str, subfeed_hash: str) -> _SubfeedState:
        state = self._states.get(feed_id, {}).get(subfeed_hash)
        if state is not None:
            return state
        with self._lock(feed_id):
            state = self._states.get(feed_id, {}).get(subfeed_hash)
            if state is None:
                state = self._load_state(feed_id, subfeed_hash)
                if state.count:     # unknown subfeeds are not cached: watches name arbitrary ids
                    self._states.setdefault(feed_id, {})[subfeed_hash] = state
            return state

    def _load_state(self, feed_id: str, subfeed_hash: str) -> _SubfeedState:
        """Verify the stored chain once; the state covers its longest valid prefix."""
        rows = self._conn().execute(
            "SELECT position, message FROM subfeedMessages WHERE feedId = ? AND subfeedHash = ? "
            "ORDER BY position", (feed_id, subfeed_hash)).fetchall()
        state = _SubfeedState(0, None)
        verifier = _Verifier(feed_id)
        for position, text in rows:
            try:
                envelope = json.loads(text)
            except ValueError:
                envelope = None
            problem = _check_envelope(verifier, envelope, state, _stored_body_text(text)) \
                if position == state.count else f"position {position} follows {state.count - 1}"
            if problem is not None:
                log.warning("feed %s subfeed %s: stored message %d does not verify (%s); "
                            "only the %d messages before it are served",
                            feed_id, subfeed_hash, position, problem, state.count)
                break
            state = _SubfeedState(state.count + 1, envelope["signature"])
        return state

    # ---- writing ------------------------------------------------------------------------

    def append(self, feed_id: str, subfeed_hash: str, messages: Sequence[Any]) -> int:
        """Sign and store messages (normalised, 8.4) in one transaction; returns the new count."""
        feed_id, subfeed_hash = check_feed_id(feed_id), check_subfeed_hash(subfeed_hash)
        texts = [message_text(m) for m in messages]
        with self._lock(feed_id):
            keys = self._key_pair(feed_id)
            if keys is None:
                raise FeedNotWriteableError(f"feed {feed_id} is not writeable on this node")
            signer = self._signers.get(feed_id) or Ed25519PrivateKey.from_private_bytes(keys.seed)
            self._signers[feed_id] = signer
            state = self._state(feed_id, subfeed_hash)
            if not texts:
                return state.count
            bad = self._unverified_tail(feed_id, subfeed_hash, state)
            if bad:
                raise FeedIntegrityError(f"feed {feed_id} subfeed {subfeed_hash}: {bad} stored messages after "
                                         f"message {state.count - 1} do not verify; refusing to append")
            timestamp = int(time.time() * 1000)
            rows: list[_Row] = []
            count, previous = state.count, state.last_signature
            for text in texts:
                # canonical_json(body), written out: its keys in sorted order, each message
                # serialised once (KeyPair.sign_body's rule: sign SHA1 of this text)
                chain = f',"previousSignature":"{previous}"' if previous is not None else ""
                body_text = f'{{"message":{text},"messageNumber":{count}{chain},"timestamp":{timestamp}}}'
                previous = signer.sign(hashlib.sha1(body_text.encode("utf-8")).digest()).hex()
                rows.append((feed_id, subfeed_hash, count, f'{{"body":{body_text},"signature":"{previous}"}}'))
                count += 1
            self._insert(feed_id, subfeed_hash, rows)
            self._states.setdefault(feed_id, {})[subfeed_hash] = _SubfeedState(count, previous)
            return count

    def import_messages(self, feed_id: str, subfeed_hash: str, envelopes: Sequence[Any]) -> int:
        """Replication: store signed envelopes from another node's copy of this feed.

        Each must verify (signature by the feed's key, messageNumber == its position,
        previousSignature == the signature before it). Envelopes this node already holds are
        skipped if identical; anything forged, tampered, conflicting or leaving a gap raises
        FeedIntegrityError and nothing of the batch is stored. Returns how many were added.
        """
        feed_id, subfeed_hash = check_feed_id(feed_id), check_subfeed_hash(subfeed_hash)
        with self._lock(feed_id):
            if self._key_pair(feed_id) is not None:
                raise FeedIntegrityError(f"feed {feed_id} is owned by this node; it is never written from outside")
            state = self._state(feed_id, subfeed_hash)
            verifier = _Verifier(feed_id)
            work = _SubfeedState(state.count, state.last_signature)
            rows: list[_Row] = []
            for envelope in envelopes:
                body = envelope.get("body") if isinstance(envelope, dict) else None
                number = body.get("messageNumber") if isinstance(body, dict) else None
                if isinstance(number, int) and not isinstance(number, bool) and 0 <= number < work.count \
                        and not rows:
                    self._check_already_held(feed_id, subfeed_hash, number, envelope)
                    continue
                problem = _check_envelope(verifier, envelope, work)
                if problem is not None:
                    raise FeedIntegrityError(f"feed {feed_id} subfeed {subfeed_hash}: refused message "
                                             f"{number!r}: {problem}")
                text = canonical_json({"body": envelope["body"], "signature": envelope["signature"]})
                rows.append((feed_id, subfeed_hash, work.count, text))
                work = _SubfeedState(work.count + 1, envelope["signature"])
            if not rows:
                return 0
            replace = self._unverified_tail(feed_id, subfeed_hash, state)
            if replace:
                log.warning("feed %s subfeed %s: replacing %d unverifiable stored messages",
                            feed_id, subfeed_hash, replace)
            self._insert(feed_id, subfeed_hash, rows, delete_from=state.count if replace else None)
            self._states.setdefault(feed_id, {})[subfeed_hash] = work
            return len(rows)

    def _check_already_held(self, feed_id: str, subfeed_hash: str, number: int, envelope: Any) -> None:
        row = self._conn().execute(
            "SELECT message FROM subfeedMessages WHERE feedId = ? AND subfeedHash = ? AND position = ?",
            (feed_id, subfeed_hash, number)).fetchone()
        if row is None or json.loads(row[0]).get("signature") != envelope.get("signature"):
            raise FeedIntegrityError(f"feed {feed_id} subfeed {subfeed_hash}: message {number} conflicts "
                                     "with the one this node holds")

    def _unverified_tail(self, feed_id: str, subfeed_hash: str, state: _SubfeedState) -> int:
        """How many stored rows lie past the verified prefix (corrupt or forged ones). They block
        appends; an import replaces them with verified messages."""
        return int(self._conn().execute(
            "SELECT COUNT(*) FROM subfeedMessages WHERE feedId = ? AND subfeedHash = ? AND position >= ?",
            (feed_id, subfeed_hash, state.count)).fetchone()[0])

    def _insert(self, feed_id: str, subfeed_hash: str, rows: list[_Row],
                delete_from: int | None = None) -> None:
        with self.db.transaction() as conn:
            if delete_from is not None:
                conn.execute("DELETE FROM subfeedMessages WHERE feedId = ? AND subfeedHash = ? AND position >= ?",
                             (feed_id, subfeed_hash, delete_from))
            conn.execute("INSERT OR IGNORE INTO feeds (feedId) VALUES (?)", (feed_id,))
            conn.execute("INSERT OR IGNORE INTO subfeeds (feedId, subfeedHash) VALUES (?, ?)",
                         (feed_id, subfeed_hash))
            conn.executemany("INSERT INTO subfeedMessages (feedId, subfeedHash, position, message) "
                             "VALUES (?, ?, ?, ?)", rows)


def _stored_body_text(text: str) -> str | None:
    """The body's text inside a stored envelope written as {"body":<body>,"signature":"<sig>"}."""
    if text.startswith('{"body":') and text.endswith('"}'):
        cut = text.rfind(',"signature":"')
        if cut > 0:
            return text[len('{"body":'):cut]
    return None


def _check_envelope(verifier: _Verifier, envelope: Any, state: _SubfeedState,
                    body_text: str | None = None) -> str | None:
    """Why `envelope` is not a valid message number state.count after state.last_signature, or None."""
    if not isinstance(envelope, dict):
        return "not a JSON object"
    body, signature = envelope.get("body"), envelope.get("signature")
    if not isinstance(body, dict) or not isinstance(signature, str) or not SIGNATURE_RE.match(signature):
        return "not a signed envelope {body, signature}"
    number = body.get("messageNumber")
    if not isinstance(number, int) or isinstance(number, bool) or number != state.count:
        return f"messageNumber {number!r} where {state.count} was expected"
    if body.get("previousSignature") != state.last_signature:
        return "previousSignature does not chain to the message before it"
    if not isinstance(body.get("message"), dict):
        return "the message is not a JSON object"
    try:
        if not verifier.verify(body, signature, body_text):
            return "bad signature"
    except (TypeError, ValueError):
        return "the body is not plain JSON"
    return None
