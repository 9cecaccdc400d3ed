"""README.md's "The first five minutes", pasted into a new shell: its ```sh blocks run verbatim,
in order, in one fresh bash (no virtualenv on PATH, no profile), with HOME, KACHERY_STORAGE_DIR and
KACHERY_DAEMON_PORT pointing into this test's temp directory, as the section says they may. The
output of each block is checked. Runs the real node, its real mount and the real commands."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.support.mount import force_unmount
from tests.support.nodeproc import free_port

REPO = Path(__file__).resolve().parent.parent
SECTION = "## The first five minutes"
MARK = "@@@ end of block {} @@@"


def first_five_minutes_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end != -1 else len(text)]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.S | re.M)


def test_section_has_the_steps():
    blocks = first_five_minutes_blocks()
    assert len(blocks) == 4, blocks
    assert "make.sh venv" in blocks[0] and "activate" in blocks[0]


def test_first_five_minutes_verbatim(tmp_path):
    blocks = first_five_minutes_blocks()
    home, storage, port = tmp_path / "home", tmp_path / "storage", free_port()
    home.mkdir()
    script = "".join(f"{block}echo '{MARK.format(i)}'\n" for i, block in enumerate(blocks))
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home),
           "LANG": "C.UTF-8", "KACHERY_STORAGE_DIR": str(storage), "KACHERY_DAEMON_PORT": str(port)}
    try:
        out = subprocess.run(["bash", "--noprofile", "--norc", "-e", "-c", script], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    finally:
        _stop_leftovers(storage, home / "kachery")
    log = (home / "kacheryfs.log").read_text() if (home / "kacheryfs.log").exists() else ""
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n--- node log ---\n{log}"
    outputs = re.split(r"@@@ end of block \d @@@\n", out.stdout)
    assert len(outputs) == len(blocks) + 1, out.stdout

    status = outputs[1]
    node_id = (storage / "kachery-node-id").read_text()
    assert f"Node ID:           {node_id}" in status
    assert f"Storage directory: {storage}" in status
    assert f"Client API:        http://127.0.0.1:{port}" in status
    assert f"Mount point:       {home / 'kachery'}" in status

    hello = b"hello kachery\n"
    sha1 = hashlib.sha1(hello).hexdigest()
    assert outputs[2].splitlines() == [f"sha1://{sha1}/hello.txt", "hello kachery", "hello kachery"], outputs[2]

    # Stopped: the mount is gone, the storage directory is free for another node.
    assert not os.path.ismount(home / "kachery")
    assert "unmounted" in log and "Traceback" not in log + out.stderr


def _stop_leftovers(storage: Path, mnt: Path) -> None:
    """If the script failed half-way, the node it started is still running: stop it by the pid
    it wrote into its lock file."""
    try:
        pid = int((storage / "kacheryfs.lock").read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"kacheryfs" in cmdline and str(mnt).encode() in cmdline:     # ours: started with --mount mnt
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
        except OSError:
            pass
    if os.path.ismount(mnt):
        force_unmount(mnt)
