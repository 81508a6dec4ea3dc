"""A throw-away PostgreSQL server on loopback for storage tests: ``initdb`` into a temporary
folder, ``pg_ctl start`` on a free port, trust authentication, stopped and deleted afterwards.

PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

USER = "tune_batchdyn"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _skip_reason() -> str | None:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        return "PostgreSQL's initdb and pg_ctl are not on PATH"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install -e '.[postgres]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as another user"
    return None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh PostgreSQL database; skip the test when impossible."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    folder = tempfile.mkdtemp(prefix="tune-batchdyn-pg-")
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(folder, "data"), _free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_owner, *command], check=True, capture_output=True, timeout=120)

    try:
        run("initdb", "-D", data, "-U", USER, "--auth=trust", "--no-sync", "-E", "UTF8")
        run("pg_ctl", "-D", data, "-l", os.path.join(folder, "log"), "-w", "-o",
            f"-h 127.0.0.1 -p {port} -k {folder}", "start")
        try:
            yield f"postgresql+psycopg2://{USER}@127.0.0.1:{port}/postgres"
        finally:
            run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
