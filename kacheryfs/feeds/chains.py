"""Check every stored subfeed's signature chain (for `kacheryfs verify`).

The rules are those Feeds applies when it first reads a subfeed (store.py `_load_state`: each
message signed with the feed's key, numbered 0..n-1, chained by previousSignature). Here every
subfeed is read afresh from feeds.db, so damage done since the node read it is found too.
Synchronous: called from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from kacheryfs.feeds.store import Feeds


@dataclass(frozen=True)
class ChainProblem:
    feed_id: str
    subfeed_hash: str
    valid: int             # messages 0..valid-1 verify
    stored: int            # messages in feeds.db

    def describe(self) -> str:
        return (f"feed {self.feed_id} subfeed {self.subfeed_hash}: only {self.valid} of {self.stored} "
                "stored messages verify (the rest are never served)")


def check_chains(feeds: Feeds) -> tuple[int, list[ChainProblem]]:
    """(subfeeds checked, problems)."""
    rows = feeds.db.conn().execute(
        "SELECT feedId, subfeedHash, count(*) FROM subfeedMessages GROUP BY feedId, subfeedHash").fetchall()
    problems = []
    for feed_id, subfeed_hash, stored in rows:
        state = feeds._load_state(feed_id, subfeed_hash)     # the store's own check, without its cache
        if state.count != stored:
            problems.append(ChainProblem(feed_id, subfeed_hash, state.count, stored))
    return len(rows), problems
