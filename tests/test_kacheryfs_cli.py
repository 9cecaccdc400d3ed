"""The `kacheryfs` command's edges: a word that is not a command never starts a node or creates a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

KACHERYFS = [sys.executable, "-m", "kacheryfs"]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _processes_of(marker: Path) -> set[int]:
    """Processes whose environment names `marker` (this test's directory): only what the command
    under test started can carry it, whatever else runs on the machine."""
    found = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                environ = (d / "environ").read_bytes()
            except OSError:
                continue
            if str(marker).encode() in environ:
                found.add(int(d.name))
    return found


@pytest.mark.parametrize("args", [
    ["nosuchcommand", "--help"],
    ["nosuch", "other"],
    ["dorp", "--help"],              # a typo of `drop` (a command since issue 14)
    ["nosuch", "-o", "port=1"],
])
def test_unknown_command_starts_nothing_and_creates_nothing(tmp_path, args):
    (tmp_path / "existing").mkdir()
    before_files = _tree(tmp_path)
    env = {**os.environ, "KACHERY_STORAGE_DIR": str(tmp_path / "storage"), "HOME": str(tmp_path)}
    r = subprocess.run(KACHERYFS + args, cwd=tmp_path, capture_output=True, timeout=60, env=env)
    assert r.returncode != 0
    assert b"No such command" in r.stderr or b"Usage" in r.stderr, r.stderr
    assert _tree(tmp_path) == before_files
    assert _processes_of(tmp_path) == set()        # nothing started (a daemon would inherit the env)


def test_mount_helper_form_needs_two_existing_directories(tmp_path):
    """One existing directory and one missing: not the helper form (mount(8) gives existing ones)."""
    (tmp_path / "storage").mkdir()
    before = _tree(tmp_path)
    r = subprocess.run(KACHERYFS + [str(tmp_path / "storage"), str(tmp_path / "mnt")], cwd=tmp_path,
                       capture_output=True, timeout=60)
    assert r.returncode != 0 and b"No such command" in r.stderr
    assert _tree(tmp_path) == before


def test_run_help_documents_every_option():
    r = subprocess.run(KACHERYFS + ["run", "--help"], capture_output=True, timeout=60)
    assert r.returncode == 0
    for option in (b"--storage-dir", b"--port", b"--no-mount", b"--mount", b"--config"):
        assert option in r.stdout


def test_the_client_stays_light():
    """`import kachery_client` loads none of the node's dependencies."""
    code = ("import sys, kachery_client\n"
            "heavy = [m for m in ('trio', 'pyfuse3', 'boto3', 'hypercorn', 'starlette', 'kacheryfs') if m in sys.modules]\n"
            "print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_the_client_exports_every_name_it_lists():
    import kachery_client as kc
    assert sorted(kc.__all__) == sorted(kc._EXPORTS)
    assert all(callable(getattr(kc, name)) for name in kc.__all__)


def test_status_starts_light():
    """`kacheryfs status` is run often: its start loads neither requests nor the client's store and
    API, nor the stored-data commands (imported when one of them is asked for)."""
    code = ("import sys, kacheryfs.cli\n"
            "heavy = [m for m in ('requests', 'kachery_client.api', 'kachery_client.store', 'kacheryfs.cli_data',"
            " 'trio') if m in sys.modules]\n"
            "print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_data_commands_are_listed_and_run_though_imported_late():
    from kacheryfs.cli import _Commands
    from kacheryfs.cli_data import COMMANDS
    assert sorted(_Commands.LATER) == sorted(c.name for c in COMMANDS)
    r = subprocess.run(KACHERYFS + ["--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and all(name in r.stdout for name in _Commands.LATER), r.stdout
    r = subprocess.run(KACHERYFS + ["gc", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--dry-run" in r.stdout, r.stdout + r.stderr


def test_every_run_option_has_help_text():
    from kacheryfs.cli import commands
    run = commands.commands["run"]
    missing = [p.name for p in run.params if getattr(p, "help", None) in (None, "") and not getattr(p, "hidden", False)]
    assert missing == []
