"""Content the node does not hold yet, streamed in order as the node verifies it (`kachery-cat`).

The client asks /downloadFileData for one STEP of bytes after the other, each with `clampEnd`
(the last one is cut at the end of the file) and `follow` (the node answers as soon as the chunks
covering the step are verified, and waits for them as long as its transfer runs, as /loadFile
does): the first bytes come out after the first chunk arrives, not after the whole file. Each
request holds the node's transfer while it waits; a client that stops asking (Ctrl-C) releases
it, and the node abandons the transfer after its grace period (docs/PROTOCOL.md 17.2, 17.4).

Only verified bytes are ever sent by the node. When the whole file was streamed, its SHA-1 is
checked here as well: chunks are verified against the manifest, and this also covers a manifest
that does not belong to the content (IntegrityError at the end).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from .errors import IntegrityError, NodeError
from .node_http import NodeClient, body_blocks
from .uri import FileURI

STEP = 16 << 20               # bytes per request: about one manifest chunk (20 MB)
ProgressFn = Callable[[int, int, "str | None"], None]       # (bytes written, bytes in all, source)


def stream_from_node(node: NodeClient, furi: FileURI, start: int, end: int | None,
                     progress: ProgressFn | None = None) -> Iterator[bytes]:
    """Bytes [start, end) of the content (to its end if end is None or past it), in order."""
    whole = hashlib.sha1() if start == 0 and end is None else None
    pos, stop = start, end
    size: int | None = None
    source: str | None = None
    while stop is None or pos < stop:
        asked = STEP if stop is None else min(STEP, stop - pos)
        with node.post_stream("/downloadFileData", _range_body(furi, pos, pos + asked)) as r:
            if r.headers.get("X-Kachery-Size", "").isdigit():     # ours; the original sends none
                size = int(r.headers["X-Kachery-Size"])
                stop = size if stop is None else min(stop, size)
            source = r.headers.get("X-Kachery-Source") or source
            total = 0 if stop is None else stop - start
            got = 0
            for block in body_blocks(r, f"sha1://{furi.sha1}"):
                got += len(block)
                if whole is not None:
                    whole.update(block)
                yield block
                if progress is not None:
                    progress(pos + got - start, total, source)
        pos += got
        if got < asked:
            if size is None:
                break                    # a short answer without a size: the end of the file
            if stop is not None and pos < stop:
                raise NodeError(f"sha1://{furi.sha1}: the node sent {got} of {asked} bytes at offset {pos - got}")
    if whole is not None and size is not None and pos == size and whole.hexdigest() != furi.sha1:
        raise IntegrityError(f"sha1://{furi.sha1}: the bytes the node sent hash to {whole.hexdigest()}")


def _range_body(furi: FileURI, start: int, end: int) -> dict[str, Any]:
    key: dict[str, Any] = {"sha1": furi.sha1}
    if furi.manifest_sha1:
        key["manifestSha1"] = furi.manifest_sha1
    body: dict[str, Any] = {"fileKey": key, "startByte": start, "endByte": end, "clampEnd": True, "follow": True}
    if furi.name and furi.name != furi.sha1:
        body["name"] = furi.name             # the node records it when it fetches (as /loadFile)
    return body
