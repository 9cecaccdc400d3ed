"""`kacheryfs status --watch`: a running node's /ui/status.json drawn as text, redrawn in place.

Pure formatting (no HTTP here; status_cli.py fetches). The same snapshot feeds the browser page
and /stats (kacheryfs/http/status_data.py builds it and documents its shape). `human_bytes` is
the one byte format of every status view (binary units: the page, `kacheryfs status`, --watch);
the kachery-* commands' progress line keeps decimal units (kachery_client/progress.py).
"""

from __future__ import annotations

from typing import Any

BAR_WIDTH = 30


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def render(s: dict[str, Any], url: str) -> list[str]:
    st = s["storage"]
    limit = human_bytes(st["cacheLimitBytes"]) if st.get("cacheLimitBytes") else "none"
    partial = s.get("partial") or {}
    lines = [
        f"Node {s['nodeId']}  (kacheryfs {s['version']}, {url})",
        f"Storage   {s['storageDir']}: {st['blobs']} blobs, {human_bytes(st['bytes'])} "
        f"(owned {human_bytes(st['ownedBytes'])}, cache {human_bytes(st['cacheBytes'])}, limit {limit})",
        f"Mount     {s.get('mountPoint') or 'not mounted'}",
        f"Peer API  {s.get('peerListen') or 'not listening'}",
        *([f"partial/  {partial['count']} unfinished, {human_bytes(partial['bytes'])} (resumed on the next load)"]
          if partial.get("count") else []),
        f"Requests  {s['counters']['requests']}",
        "",
        "Transfers in progress:" if s["transfers"] else "No transfers in progress.",
    ]
    for t in s["transfers"]:
        lines.append(f"  {t['sha1'][:12]} {bar(t['fraction'])} {100 * t['fraction']:5.1f}%  "
                     f"{human_bytes(t['bytesPresent'])} / {human_bytes(t['size'])}  "
                     f"{human_bytes(t['rateBytesPerSecond'])}/s  from {t.get('source') or '-'}")
    for c in s["channels"]:
        lines.append(f"Channel {c['name']} ({', '.join(c['roles'])})")
        for r in c["peers"] + ([c["bucket"]] if c.get("bucket") else []):
            state = {True: "up", False: "DOWN", None: "?"}[r["reachable"]]
            latency = f" {1000 * r['latencySeconds']:.0f} ms" if r.get("latencySeconds") is not None else ""
            error = f"  ({r['error']})" if r.get("error") else ""
            lines.append(f"  {state:4} {r['label']}{latency}{error}")
    if s["recentErrors"]:
        lines.append("Recent errors:")
        lines += [f"  {e['level']}: {e['message'][:160]}" for e in s["recentErrors"][:5]]
    return lines
