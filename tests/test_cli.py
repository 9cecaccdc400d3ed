"""The kachery-* commands, run as separate processes, in offline mode."""

import os

import pytest

from tests.support.cli import run_cli


@pytest.fixture
def env(tmp_path):
    return {"KACHERY_OFFLINE_STORAGE_DIR": str(tmp_path / "storage")}


def test_store_load_cat(tmp_path, env):
    a, b = tmp_path / "a.txt", tmp_path / "b.bin"
    a.write_bytes(b"hello")
    b.write_bytes(os.urandom(5000))
    r = run_cli("kachery-store", str(a), str(b), env=env)
    assert r.returncode == 0, r.stderr
    ua, ub = r.stdout.decode().split()
    assert ua == "sha1://aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d/a.txt" and ub.endswith("/b.bin")
    r = run_cli("kachery-cat", ua, env=env)
    assert r.stdout == b"hello"
    r = run_cli("kachery-cat", ua, "--start", "1", "--end", "3", env=env)
    assert r.stdout == b"el"
    r = run_cli("kachery-load", ub, env=env)
    assert open(r.stdout.decode().strip(), "rb").read() == b.read_bytes()
    dest = tmp_path / "out.bin"
    r = run_cli("kachery-load", ub, "--dest", str(dest), env=env)
    assert r.returncode == 0 and dest.read_bytes() == b.read_bytes()


def test_link(tmp_path, env):
    f = tmp_path / "big.dat"
    f.write_bytes(b"x" * 1000)
    r = run_cli("kachery-link", str(f), env=env)
    uri = r.stdout.decode().strip()
    assert r.returncode == 0 and uri.endswith("/big.dat")
    assert run_cli("kachery-load", uri, env=env).stdout.decode().strip() == str(f)


def test_version_and_help():
    r = run_cli("kachery-client", "version")
    assert r.returncode == 0 and r.stdout.decode().startswith("kachery-client ")
    for cmd in ("kachery-cat", "kachery-load", "kachery-store", "kachery-link"):
        r = run_cli(cmd, "--help")
        assert r.returncode == 0 and b"Usage:" in r.stdout


@pytest.mark.parametrize("command, args, needle", [
    ("kachery-cat", ["sha1://nothex/x"], "invalid hash"),
    ("kachery-cat", ["sha1://" + "0" * 40 + "/x"], "is not in"),
    ("kachery-load", ["ftp://x/y"], "unsupported URI scheme"),
    ("kachery-store", ["/nonexistent/file"], "no such file"),
    ("kachery-link", ["/nonexistent/file"], "cannot link"),
    ("kachery-cat", ["sha1://" + "0" * 40 + "/../../etc/passwd"], "not allowed"),
])
def test_user_mistakes_one_line_no_traceback(env, command, args, needle):
    r = run_cli(command, *args, env=env)
    err = r.stderr.decode()
    assert r.returncode != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert needle in err


def test_unwritable_offline_dir_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        env = {"KACHERY_OFFLINE_STORAGE_DIR": "/proc/kachery-cannot-exist"}
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        env = {"KACHERY_OFFLINE_STORAGE_DIR": str(ro / "sub")}
    f = tmp_path / "a.txt"
    f.write_text("x")
    r = run_cli("kachery-store", str(f), env=env)
    err = r.stderr.decode()
    assert r.returncode != 0 and "Traceback" not in err and "offline storage directory" in err
