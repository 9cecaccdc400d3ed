"""Run a real kacheryfs node process on 127.0.0.1 for a test, and always stop it.

    with running_node(tmp_path / "storage") as node:
        requests.get(node.url + "/probe")
        env = client_env(node)       # for clients in subprocesses

Readiness: GET /probe answers 200, polled with a deadline; if the child dies first the test
fails at once with the child's stderr. Stop: SIGTERM, then SIGKILL after 5 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

START_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class NodeProc:
    storage_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def auth_code(self) -> str:
        return (self.storage_dir / "client-auth").read_text()

    def headers(self) -> dict[str, str]:
        return {"KACHERY-CLIENT-AUTH-CODE": self.auth_code()}

    def post(self, path: str, **kwargs: object) -> requests.Response:
        headers = {**self.headers(), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return requests.post(self.url + path, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def start_node(storage_dir: Path, *, port: int | None = None, args: Sequence[str] = (),
               env: dict[str, str] | None = None) -> NodeProc:
    port = port or free_port()
    storage_dir.mkdir(parents=True, exist_ok=True)
    log_path = storage_dir.parent / f"node-{port}.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kacheryfs", "run", "--storage-dir", str(storage_dir), "--port", str(port),
         *(args if "--mount" in args else ("--no-mount", *args))],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    log.close()
    node = NodeProc(storage_dir, port, proc, log_path)
    deadline = time.monotonic() + START_DEADLINE
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the node exited with {proc.returncode}:\n{node.log()}")
        try:
            if requests.get(node.url + "/probe", timeout=1).status_code == 200:
                return node
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            node.stop()
            raise RuntimeError(f"the node did not answer within {START_DEADLINE} s:\n{node.log()}")
        time.sleep(0.02)


@contextlib.contextmanager
def running_node(storage_dir: Path, **kwargs: object) -> Iterator[NodeProc]:
    node = start_node(storage_dir, **kwargs)  # type: ignore[arg-type]
    try:
        yield node
    finally:
        node.stop()


def client_env(node: NodeProc) -> dict[str, str]:
    """Environment for a client of this node on this machine (sharing its storage dir)."""
    return {"KACHERY_DAEMON_HOST": "127.0.0.1", "KACHERY_DAEMON_PORT": str(node.port),
            "KACHERY_STORAGE_DIR": str(node.storage_dir)}
