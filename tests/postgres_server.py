"""A throwaway PostgreSQL server on loopback for the distributed-search tests.

`postgres_url` starts one server per test worker (initdb + pg_ctl in a temp folder, a free TCP
port on 127.0.0.1, the unix socket in the temp folder, fsync off) and stops it at the end. It is
skipped, with the reason, when no PostgreSQL binaries or no psycopg2 driver are installed.
PostgreSQL refuses to run as root, so under root (CI) the server runs as the `postgres` user (or
`nobody`) through runuser, with the folder owned by that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> list[str]:
    """The command prefix that drops root; empty when not root."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", user, "--"]
    pytest.skip("running as root and no `postgres`/`nobody` user with runuser to start PostgreSQL as")
    return []


@pytest.fixture(scope="session")
def postgres_url():
    pytest.importorskip("psycopg2", reason="the psycopg2 driver is not installed (pip install trainwell[postgres])")
    bindir = _bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    prefix = _run_as()
    root = Path(tempfile.mkdtemp(prefix="trainwell-pg-"))
    if prefix:
        user = prefix[2]
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data, log, port = root / "data", root / "server.log", _free_port()

    def run(*cmd: str) -> None:
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120, cwd=root)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr or proc.stdout}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "trainwell", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "trainwell", "studies")
        yield f"postgresql://trainwell@127.0.0.1:{port}/studies"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120, cwd=root)
        shutil.rmtree(root, ignore_errors=True)
