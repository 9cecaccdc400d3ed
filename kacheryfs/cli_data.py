"""`kacheryfs verify | du | gc | drop`: parse, ask, print.

Each command asks the node running on the storage directory (its HTTP API, http/data_routes.py).
When no node runs there, it takes the storage directory's lock itself (a local Node, the same
code behind the same handlers) and works offline; a node that holds the lock but does not
answer at the given address is an error naming both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import requests

from kachery_client.cli_data import ByteProgress
from kachery_client.config import AUTH_HEADER
from kachery_client.errors import KacheryError, UsageError
from kacheryfs.status_cli import client_auth_code

ProgressFn = Callable[[int, int], None]


class DataTarget:
    """The running node on `storage_dir` over HTTP, or (none running) a local Node."""

    def __init__(self, storage_dir: str, host: str, port: int):
        self.storage_dir = Path(storage_dir).expanduser().resolve()
        self.url = f"http://{host}:{port}"
        self.remote = self._node_answers()

    def _node_answers(self) -> bool:
        try:
            r = requests.get(self.url + "/probe", timeout=5)
            served = r.json().get("kacheryStorageDir")
        except (requests.RequestException, ValueError):
            return False
        if served and Path(served).resolve() != self.storage_dir:
            raise UsageError(f"the node at {self.url} serves {served}, not {self.storage_dir} "
                             "(pass --port or --storage-dir)")
        return True

    def _headers(self) -> dict[str, str]:
        return {AUTH_HEADER: client_auth_code(self.storage_dir, self.url)}

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if not self.remote:
            import msgspec

            from kacheryfs.http.data_routes import DATA_ROUTES
            schema, handler = DATA_ROUTES[path]
            return self._locally(lambda node: handler(node, msgspec.convert(body, schema)))
        try:
            r = requests.post(self.url + path, json=body, headers=self._headers(), timeout=3600)
        except requests.RequestException as e:
            raise KacheryError(f"lost the node at {self.url}: {e}") from None
        return _answer(r)

    def verify(self, repair: bool, progress: ProgressFn) -> dict[str, Any]:
        if not self.remote:
            return self._locally(lambda node: node.data.verify(repair, progress))
        try:
            with requests.post(self.url + "/kacheryfs/verify", json={"repair": repair}, headers=self._headers(),
                               stream=True, timeout=3600) as r:
                if r.status_code != 200:
                    _answer(r)
                for line in r.iter_lines():
                    obj = json.loads(line)
                    if "progress" in obj:
                        progress(*obj["progress"])
                    elif "error" in obj:
                        raise KacheryError(obj["error"])
                    elif "report" in obj:
                        return dict(obj["report"])
        except (requests.RequestException, ValueError) as e:
            raise KacheryError(f"lost the node at {self.url} during verify: {e}") from None
        raise KacheryError(f"the node at {self.url} ended verify without a report")

    def _locally(self, work: Callable[[Any], Any]) -> Any:
        import trio

        from kacheryfs.node import Node, NodeAlreadyRunning
        try:
            node = Node(self.storage_dir)
        except NodeAlreadyRunning:
            raise UsageError(f"a node runs on {self.storage_dir} but none answers at {self.url}: "
                             "pass its --port") from None

        async def run() -> Any:
            async with trio.open_nursery() as nursery:
                if node.fetcher is not None:           # --repair fetches
                    await nursery.start(node.fetcher.run)
                out = await work(node)
                nursery.cancel_scope.cancel()
            return out
        try:
            return trio.run(run)
        finally:
            node.close()


def _answer(r: requests.Response) -> dict[str, Any]:
    try:
        obj = r.json()
    except ValueError:
        obj = {"error": r.text[:300]}
    if r.status_code != 200 or not isinstance(obj, dict):
        message = obj.get("error") if isinstance(obj, dict) else None
        raise (UsageError if r.status_code == 400 else KacheryError)(message or f"HTTP {r.status_code}")
    return obj


def _target_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    from kacheryfs.cli import _default_port, _default_storage_dir
    fn = click.option("--host", default=os.environ.get("KACHERY_DAEMON_HOST") or "127.0.0.1",
                      show_default=True)(fn)
    fn = click.option("--port", type=int, default=_default_port, show_default="$KACHERY_DAEMON_PORT or 20431")(fn)
    return click.option("--storage-dir", default=_default_storage_dir,
                        show_default="$KACHERY_STORAGE_DIR or ~/kachery-storage")(fn)


def _one_line_errors(work: Callable[[], None]) -> None:
    try:
        work()
    except KacheryError as e:
        raise click.ClickException(str(e)) from None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@click.command(help="Re-hash every blob and link, check manifests and feed signature chains. Corrupt "
                    "content moves to quarantine/ (never served again); exit 1 names each problem. "
                    "--repair fetches corrupt or missing content again from the channels' sources.")
@click.option("--repair", is_flag=True, help="fetch corrupt or missing content again and verify it")
@_target_options
def verify(repair: bool, storage_dir: str, port: int, host: str) -> None:
    def work() -> None:
        bar = ByteProgress("verifying")
        try:
            report = DataTarget(storage_dir, host, port).verify(repair, bar)
        finally:
            bar.close()
        _print_verify(report)
    _one_line_errors(work)


def _print_verify(report: dict[str, Any]) -> None:
    seconds = max(report["seconds"], 1e-6)
    click.echo(f"checked {report['blobs']} blobs, {report['links']} links ({_size(report['bytes'])}) and "
               f"{report['subfeeds']} subfeeds in {report['seconds']:.2f} s "
               f"({report['bytes'] / seconds / 1e6:.0f} MB/s)")
    repaired = set(report["repaired"])
    bad = 0
    for f in report["findings"]:
        fixed = f["sha1"] in repaired
        note = {"corrupt": "quarantined", "bad-link": "link quarantined"}.get(f["problem"], "")
        if fixed:
            note = (note + ", " if note else "") + "repaired"
        click.echo(f"{f['problem']}: sha1://{f['sha1']}: {f['detail']}" + (f" ({note})" if note else ""),
                   err=not fixed)
        bad += f["problem"] != "stale-link" and not fixed
    for sha1 in sorted(repaired - {f["sha1"] for f in report["findings"]}):
        click.echo(f"repaired: sha1://{sha1} (quarantined earlier)")
    for u in report["unrepaired"]:
        click.echo(f"not repaired: sha1://{u['sha1']}: {u['error']}", err=True)
    for p in report["feedProblems"]:
        click.echo(f"feed: {p}", err=True)
    bad += len(report["feedProblems"]) + len(report["unrepaired"])
    if bad:
        raise click.exceptions.Exit(1)
    click.echo("all content verified" + (" (after repair)" if repaired else ""))


@click.command(help="Bytes and blob counts by kind: owned, cached, pinned, links, partial transfers, "
                    "quarantine.")
@click.option("--json", "as_json", is_flag=True, help="one JSON object, for scripts")
@_target_options
def du(as_json: bool, storage_dir: str, port: int, host: str) -> None:
    def work() -> None:
        totals = DataTarget(storage_dir, host, port).call("/kacheryfs/du", {})["du"]
        if as_json:
            click.echo(json.dumps(totals, sort_keys=True))
            return
        for kind in ("owned", "cached", "pinned", "links", "partial", "quarantine", "store"):
            t = totals[kind]
            label = "total (owned+cached)" if kind == "store" else kind
            click.echo(f"{label:<21} {t['count']:>9} {'item' if kind in ('links', 'partial') else 'blob'}s "
                       f"{t['bytes']:>16} bytes  ({_size(t['bytes'])})")
    _one_line_errors(work)


@click.command(help="Remove cached, unpinned blobs, least recently used first, until the cache holds at most "
                    "--target-bytes (default 0: all of them) or none older than --older-than remains. "
                    "Owned and pinned content is never removed.")
@click.option("--target-bytes", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="only blobs last used more than DAYS days ago")
@click.option("--dry-run", is_flag=True, help="print what would be removed, remove nothing")
@_target_options
def gc(target_bytes: int, older_than: float | None, dry_run: bool, storage_dir: str, port: int, host: str) -> None:
    def work() -> None:
        out = DataTarget(storage_dir, host, port).call(
            "/kacheryfs/gc", {"targetBytes": target_bytes, "olderThanDays": older_than, "dryRun": dry_run})
        verb = "would remove" if dry_run else "removed"
        for r in out["removed"]:
            click.echo(f"{verb} sha1://{r['sha1']} ({r['size']} bytes)")
        click.echo(f"{'would free' if dry_run else 'freed'} {out['freed']} bytes ({_size(out['freed'])}) "
                   f"in {len(out['removed'])} blobs")
    _one_line_errors(work)


@click.command(help="Remove owned content from this node, only if at least `numcopies` other sources "
                    "(peers, buckets) hold it with the right size and manifest.")
@click.argument("uri")
@click.option("--force", is_flag=True, help="drop without asking the other sources")
@_target_options
def drop(uri: str, force: bool, storage_dir: str, port: int, host: str) -> None:
    def work() -> None:
        out = DataTarget(storage_dir, host, port).call("/kacheryfs/drop", {"uri": uri, "force": force})
        if force:
            click.echo("--force: dropped without checking that another copy exists", err=True)
        copies = ", ".join(c["source"] for c in out["copies"])
        click.echo(f"dropped sha1://{out['sha1']} ({out['size']} bytes)" + (f"; held by {copies}" if copies else ""))
    _one_line_errors(work)


COMMANDS = (verify, du, gc, drop)
