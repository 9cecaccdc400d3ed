"""Run the kachery-* commands as a user would: a separate process, stdout/stderr captured."""

from __future__ import annotations

import os
import subprocess
import sys

ENTRY_POINTS = {
    "kachery-cat": "cat_main", "kachery-load": "load_main", "kachery-store": "store_main",
    "kachery-link": "link_main", "kachery-client": "client_main",
    "kachery-pin": "cli_data:pin_main", "kachery-unpin": "cli_data:unpin_main",
    "kachery-whereis": "cli_data:whereis_main",
}


def run_cli(command: str, *args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    module, _, entry = ENTRY_POINTS[command].rpartition(":")
    code = (f"import sys; from kachery_client.{module or 'cli'} import {entry} as m; "
            f"sys.argv[0] = {command!r}; m()")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
