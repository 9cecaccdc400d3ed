"""Run the kachery-* commands as a user would: a separate process, stdout/stderr captured."""

from __future__ import annotations

import os
import subprocess
import sys

ENTRY_POINTS = {
    "kachery-cat": "cat_main", "kachery-load": "load_main", "kachery-store": "store_main",
    "kachery-link": "link_main", "kachery-client": "client_main",
}


def run_cli(command: str, *args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    code = f"import sys; from kachery_client.cli import {ENTRY_POINTS[command]} as m; sys.argv[0] = {command!r}; m()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
