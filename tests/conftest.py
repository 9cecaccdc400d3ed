"""Fixtures shared by several test modules."""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KC120_VENV = Path(os.environ.get("KACHERY_CLIENT_120_VENV", REPO / ".venv-kc120"))


def _works(py: Path) -> bool:
    return py.exists() and subprocess.run([py, "-c", "import kachery_client"], capture_output=True,
                                          cwd="/").returncode == 0


@pytest.fixture(scope="session")
def kc120_python() -> str:
    """A venv with the unmodified kachery-client==1.2.0 from PyPI and numpy (made once, reused).

    Scripts run with it must use a cwd outside the repo: `python -c` puts the cwd first on
    sys.path, and ours is also called kachery_client."""
    py = KC120_VENV / "bin/python"
    with open(REPO / ".venv-kc120.lock", "w") as lock:      # parallel test runs share one venv
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _works(py):
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(KC120_VENV)], check=True)
            subprocess.run([KC120_VENV / "bin/pip", "install", "-q", "kachery-client==1.2.0", "numpy"],
                           check=True)
    return str(py)


@pytest.fixture
def shared(node, monkeypatch):
    """The client environment of a test module's `node` fixture, sharing its storage directory."""
    from tests.support.nodeproc import client_env
    monkeypatch.delenv("KACHERY_OFFLINE_STORAGE_DIR", raising=False)
    monkeypatch.delenv("KACHERY_CLIENT_AUTH_CODE", raising=False)
    for k, v in client_env(node).items():
        monkeypatch.setenv(k, v)
    return node
