"""Task round trips through one node, and between two nodes: request -> backend -> result.

    python bench/tasks.py [--count 200]

Target: median < 50 ms per non-cached request, between two nodes on loopback (a 'query' with varying kwargs, so nothing is
served from stored results). Also: a repeated pure calculation answered from the store.
Starts its own node on a free port with a temporary storage directory, and a backend process
(this file with --backend) providing trivial functions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.nodeproc import NodeProc, client_env, running_node  # noqa: E402
from tests.support.tasks import start_backend, stop_backend, wait_for_backend  # noqa: E402

CHANNEL = "bench"


def backend() -> None:
    import kachery_client as kc

    @kc.taskfunction("bench.echo", type="query")
    def echo(i: int) -> dict[str, int]:
        return {"i": i}

    @kc.taskfunction("bench.square", type="pure-calculation")
    def square(x: int) -> int:
        return x * x

    @kc.taskfunction("test.ping", type="query")      # what wait_for_backend probes
    def ping() -> str:
        return "pong"

    kc.run_task_backend(channels=[CHANNEL], task_function_ids=["bench.echo", "bench.square", "test.ping"])


def round_trips(count: int, function_id: str, function_type: str, kwargs_of: object) -> list[float]:
    import kachery_client as kc
    times = []
    for i in range(count):
        kwargs = kwargs_of(i)  # type: ignore[operator]
        t = time.perf_counter()
        r = kc.request_task(task_function_id=function_id, task_kwargs=kwargs, task_function_type=function_type,
                            channel=CHANNEL)
        r.wait(30)
        times.append(time.perf_counter() - t)
    return times


def summary(name: str, times: list[float], target: str = "") -> None:
    ms = sorted(t * 1e3 for t in times)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    print(f"{name}: n={len(ms)} median {statistics.median(ms):.1f} ms, p90 {p90:.1f} ms, max {ms[-1]:.1f} ms"
          + (f" (target {target})" if target else ""))


def probe_round_trips(count: int) -> list[float]:
    """Baseline: one authenticated JSON call to the node (POST /probe), as loaded as this machine is now."""
    import kachery_client as kc
    client = kc.node_client()
    times = []
    for _ in range(count):
        t = time.perf_counter()
        client.post_json("/probe", {})
        times.append(time.perf_counter() - t)
    return times


def measure_one_node(node: NodeProc, count: int) -> None:
    os.environ.update(client_env(node))
    round_trips(5, "bench.echo", "query", lambda i: {"i": -1 - i})          # warm up
    base = probe_round_trips(count)
    summary("baseline: one JSON call to the node (POST /probe)", base)
    queries = round_trips(count, "bench.echo", "query", lambda i: {"i": i})
    summary("query round trip, one node (request -> backend -> result)", queries, "median < 50 ms")
    print(f"  = {statistics.median(queries) / statistics.median(base):.1f} baseline calls "
          "(request, delivery, running, finished + result, result GET)")
    summary("pure calculation, first request (runs)",
            round_trips(count, "bench.square", "pure-calculation", lambda i: {"x": i}))
    summary("pure calculation, repeated request (from the stored result)",
            round_trips(count, "bench.square", "pure-calculation", lambda i: {"x": i}))


def measure_two_nodes(count: int) -> None:
    """The backend on node B; the client on node A, a peer of B in CHANNEL (the request crosses
    A -> B and the result B -> A). The client runs in its own process: it is configured by its
    environment, once."""
    import subprocess

    from tests.support.network import source_and_reader
    with tempfile.TemporaryDirectory() as d:
        # The backend's node is the source (B here), the client's the reader (A here).
        sb, sa, port_b = source_and_reader(Path(d), channel=CHANNEL)
        with running_node(sb, port=port_b) as b, running_node(sa) as a:
            proc = start_backend(b, [CHANNEL], Path(d) / "runs.log", command=[sys.executable, __file__, "--backend"])
            try:
                wait_for_backend(b, CHANNEL, proc)
                subprocess.run([sys.executable, __file__, "--two-node-client", str(count)], check=True,
                               env={**os.environ, **client_env(a)})
            finally:
                stop_backend(proc)


def two_node_client(count: int) -> None:
    round_trips(5, "bench.echo", "query", lambda i: {"i": -1 - i})          # warm up: A follows B
    summary("query round trip, two nodes (client on A, backend on B)",
            round_trips(count, "bench.echo", "query", lambda i: {"i": i}), "median < 50 ms")
    summary("pure calculation, two nodes, first request (runs on B)",
            round_trips(count, "bench.square", "pure-calculation", lambda i: {"x": i}))
    summary("pure calculation, two nodes, repeated (from A's stored result)",
            round_trips(count, "bench.square", "pure-calculation", lambda i: {"x": i}))


def main() -> None:
    if "--backend" in sys.argv:
        backend()
        return
    if "--two-node-client" in sys.argv:
        two_node_client(int(sys.argv[-1]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d, running_node(Path(d) / "storage") as node:
        proc = start_backend(node, [CHANNEL], Path(d) / "runs.log", command=[sys.executable, __file__, "--backend"])
        try:
            wait_for_backend(node, CHANNEL, proc)
            measure_one_node(node, args.count)
        finally:
            stop_backend(proc)
    measure_two_nodes(args.count)


if __name__ == "__main__":
    main()
