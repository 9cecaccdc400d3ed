"""The client auth code (docs/PROTOCOL.md section 2): a file of 12 letters that clients send back.

Rotation never leaves a window without a valid file or a transient 403 (the original's defect 6):
the new code is accepted before the file is published, the file is replaced by atomic rename,
and the previous code stays valid, so a client's 60 s cache outlives a rotation. The code found
in an existing file at start is accepted as "previous", so clients survive a node restart.
Codes are never logged (defect 7).
"""

from __future__ import annotations

import errno
import hmac
import os
import secrets
import string
from pathlib import Path

CODE_LENGTH = 12
FILE_MODE = 0o640


def new_code() -> str:
    return "".join(secrets.choice(string.ascii_letters) for _ in range(CODE_LENGTH))


class ClientAuth:
    def __init__(self, storage_dir: Path):
        self.path = storage_dir / "client-auth"
        previous = _read_code(self.path)
        self._accepted: list[str] = [previous] if previous else []
        self.rotate()

    @property
    def current(self) -> str:
        return self._accepted[-1]

    def rotate(self) -> None:
        code = new_code()
        before = self._accepted
        self._accepted = (self._accepted + [code])[-2:]      # accept it before anyone can read it
        tmp = self.path.with_name(f"client-auth.tmp.{secrets.token_hex(3)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)
                if os.write(fd, code.encode()) != len(code):
                    raise OSError(errno.ENOSPC, "short write of the client auth code")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:       # e.g. a full disk: the published code stays the accepted one
            self._accepted = before
            tmp.unlink(missing_ok=True)
            raise

    def accepts(self, code: str | None) -> bool:
        if not code:
            return False
        return any(hmac.compare_digest(code.encode(), c.encode()) for c in self._accepted)


def _read_code(path: Path) -> str | None:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    return text if len(text) == CODE_LENGTH and text.isalpha() and text.isascii() else None
