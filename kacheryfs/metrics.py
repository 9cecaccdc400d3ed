"""The node's Prometheus metrics, all defined here, in one registry (served as GET /metrics).

Names follow Prometheus' rules: a `kacheryfs_` prefix, base units (bytes, seconds), `_total` on
counters, and `kacheryfs_build_info` for the version. Labels stay low-cardinality: a source kind
("peer", "bucket"), an error kind, a route *template*, a status code, a FUSE operation name, a task
status — never a hash, a name, a raw path or a node id.

Code anywhere in the node records with one line (`metrics.FETCHED_BYTES.labels("peer").inc(n)`);
storage totals, which are cheaper to read than to track, are set just before a scrape by the
HTTP edge (`set_storage_totals`).

A top-level helper like config.py: imports nothing from kacheryfs, so every layer may import it.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

from kacheryfs import __version__

disable_created_metrics()        # no `_created` twin of every counter: half the series, same facts
REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4        # what generate_latest writes

BUILD_INFO = Info("kacheryfs_build", "The kacheryfs version this node runs.", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})

# ---- content stored here --------------------------------------------------------------------

# via: "http" (POST /store), "mount" (files written into incoming/), "client" (a client sharing
# the storage directory wrote the blob and announced it).
STORED_BYTES = Counter("kacheryfs_stored_bytes_total", "Bytes of content stored into this node.",
                       ["via"], registry=REGISTRY)
STORED_BLOBS = Counter("kacheryfs_stored_blobs_total", "Blobs stored into this node.",
                       ["via"], registry=REGISTRY)

# ---- content fetched from peers and buckets ------------------------------------------------

FETCHED_BYTES = Counter("kacheryfs_fetched_bytes_total",
                        "Verified bytes fetched from other nodes and buckets.", ["source_kind"],
                        registry=REGISTRY)
FETCHED_BLOBS = Counter("kacheryfs_fetched_blobs_total",
                        "Blobs fetched, verified and published (by the kind of the first source used).",
                        ["source_kind"], registry=REGISTRY)
FETCH_DURATION = Histogram("kacheryfs_fetch_duration_seconds",
                           "Time from the start of a transfer to its end, by outcome.", ["outcome"],
                           buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
                           registry=REGISTRY)
TRANSFERS_IN_PROGRESS = Gauge("kacheryfs_transfers_in_progress", "Transfers running now.",
                              registry=REGISTRY)
# error: "failed" (connection, timeout, 5xx), "refused" (403, credentials), "bad_bytes"
SOURCE_ERRORS = Counter("kacheryfs_source_errors_total", "Failed requests to peers and buckets.",
                        ["source_kind", "error"], registry=REGISTRY)
CHUNK_VERIFICATION_FAILURES = Counter(
    "kacheryfs_chunk_verification_failures_total",
    "Chunks whose bytes did not hash to the manifest's value (discarded, never served).",
    ["source_kind"], registry=REGISTRY)

# ---- storage totals (set before each scrape) ------------------------------------------------

STORAGE_BLOBS = Gauge("kacheryfs_storage_blobs", "Blobs in the store.", registry=REGISTRY)
STORAGE_BYTES = Gauge("kacheryfs_storage_bytes", "Bytes of all blobs in the store.", registry=REGISTRY)
CACHE_BYTES = Gauge("kacheryfs_cache_bytes",
                    "Bytes of blobs a peer or bucket also holds (evictable under the cache limit).",
                    registry=REGISTRY)
OWNED_BYTES = Gauge("kacheryfs_owned_bytes", "Bytes of blobs held only here (never evicted).",
                    registry=REGISTRY)
CACHE_LIMIT_BYTES = Gauge("kacheryfs_cache_limit_bytes", "The configured cache limit (0: none).",
                          registry=REGISTRY)

# ---- the edges ------------------------------------------------------------------------------

HTTP_REQUESTS = Counter("kacheryfs_http_requests_total", "HTTP requests answered, by route template.",
                        ["method", "route", "status"], registry=REGISTRY)
GATEWAY_BYTES = Counter("kacheryfs_gateway_sent_bytes_total", "Content bytes sent by the HTTP gateway.",
                        registry=REGISTRY)
FUSE_OPERATIONS = Counter("kacheryfs_fuse_operations_total", "FUSE requests handled, by operation.",
                          ["operation"], registry=REGISTRY)
FUSE_READ_BYTES = Counter("kacheryfs_fuse_read_bytes_total", "Bytes returned to reads in the mount.",
                          registry=REGISTRY)
MOUNT_INODES = Gauge("kacheryfs_mount_inodes", "Inodes of content the kernel holds in the mount "
                     "(looked up and not yet forgotten; a listing of sha1/ holds none).", registry=REGISTRY)

# ---- feeds and tasks ------------------------------------------------------------------------

FEED_MESSAGES_APPENDED = Counter("kacheryfs_feed_messages_appended_total",
                                 "Messages appended to feeds owned here.", registry=REGISTRY)
FEED_MESSAGES_REPLICATED = Counter("kacheryfs_feed_messages_replicated_total",
                                   "Verified messages imported from other nodes' feeds.", registry=REGISTRY)
TASK_STATUS_CHANGES = Counter("kacheryfs_task_status_changes_total",
                              "Tasks that entered each status.", ["status"], registry=REGISTRY)


# Known label values start at 0, so a rate() sees the first increase and a scrape shows them all.
for _via in ("http", "mount", "client"):
    STORED_BYTES.labels(_via)
    STORED_BLOBS.labels(_via)
for _kind in ("peer", "bucket"):
    FETCHED_BYTES.labels(_kind)
    FETCHED_BLOBS.labels(_kind)
    CHUNK_VERIFICATION_FAILURES.labels(_kind)
    for _error in ("failed", "refused", "bad_bytes"):
        SOURCE_ERRORS.labels(_kind, _error)


def count_stored(via: str, size: int) -> None:
    STORED_BLOBS.labels(via).inc()
    STORED_BYTES.labels(via).inc(size)


def count_fetched(source_kind: str) -> None:
    FETCHED_BLOBS.labels(source_kind).inc()


def set_storage_totals(blobs: int, total_bytes: int, cache_bytes: int, limit: int | None) -> None:
    STORAGE_BLOBS.set(blobs)
    STORAGE_BYTES.set(total_bytes)
    CACHE_BYTES.set(cache_bytes)
    OWNED_BYTES.set(max(0, total_bytes - cache_bytes))
    CACHE_LIMIT_BYTES.set(limit or 0)


def render() -> bytes:
    """The Prometheus text format of every metric of this node."""
    return generate_latest(REGISTRY)
