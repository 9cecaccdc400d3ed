"""The client's environment, read once into one Config object (docs/PROTOCOL.md section 1.1).

    KACHERY_OFFLINE_STORAGE_DIR   offline mode: this storage dir, and never a node
    KACHERY_STORAGE_DIR           the node's storage dir, when the client shares it
    KACHERY_DAEMON_HOST/PORT      where the node listens (localhost:20431)
    KACHERY_TEMP_DIR              client temp root
    KACHERY_KEEP_TEMP_FILES       exactly "1" keeps the client's temp files
    KACHERY_CLIENT_AUTH_CODE      a code the node's operator listed for clients on other machines
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

DEFAULT_PORT = 20431
AUTH_HEADER = "KACHERY-CLIENT-AUTH-CODE"      # the header every client request carries its code in
DEFAULT_STORAGE_DIR = Path("~/kachery-storage")


@dataclass(frozen=True)
class Config:
    offline_storage_dir: Path | None
    storage_dir: Path | None
    daemon_host: str
    daemon_port: int
    temp_dir: Path
    keep_temp_files: bool
    client_auth_code: str | None = None

    @property
    def offline(self) -> bool:
        return self.offline_storage_dir is not None

    @property
    def daemon_url(self) -> str:
        host = self.daemon_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.daemon_port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        offline = _path_or_none(env.get("KACHERY_OFFLINE_STORAGE_DIR"))
        storage = _path_or_none(env.get("KACHERY_STORAGE_DIR"))
        port_text = env.get("KACHERY_DAEMON_PORT", "") or str(DEFAULT_PORT)
        try:
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise UsageError(f"KACHERY_DAEMON_PORT must be a port number, not {port_text!r}") from None
        if env.get("KACHERY_TEMP_DIR"):
            temp = Path(env["KACHERY_TEMP_DIR"]).expanduser()
        elif offline is not None:
            temp = offline / "kachery-tmp"
        else:
            import tempfile  # here: most commands never need it
            temp = Path(tempfile.gettempdir()) / "kachery-tmp"
        return cls(
            offline_storage_dir=offline,
            storage_dir=storage,
            daemon_host=env.get("KACHERY_DAEMON_HOST", "") or "localhost",
            daemon_port=port,
            temp_dir=temp,
            keep_temp_files=env.get("KACHERY_KEEP_TEMP_FILES") == "1",
            client_auth_code=env.get("KACHERY_CLIENT_AUTH_CODE") or None,
        )


def _path_or_none(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None
