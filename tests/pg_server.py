"""A real PostgreSQL server for the tests: initdb in a temporary folder, as a non-root user.

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
``postgres`` system user (Debian's package creates it), else ``nobody``; the commands run
through ``runuser``. The server listens on a free port on 127.0.0.1 only (no Unix socket
outside its folder), with ``trust`` authentication for the ``mimir`` superuser plus a
password user for the tests that check passwords. ``make test`` installs Debian's
``postgresql`` when the binaries are missing (they are looked up in PATH and
/usr/lib/postgresql/*/bin).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

SUPERUSER = "mimir"
PASSWORD_USER = "mimir_pw"


def find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def missing_reason() -> str | None:
    missing = [n for n in ("initdb", "pg_ctl", "postgres") if find_bin(n) is None]
    if missing:
        return f"PostgreSQL server binaries missing ({', '.join(missing)}): apt-get install postgresql (make test does)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg missing: pip install 'mimir-tutor[postgres]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway cluster. ``start()``, ``new_database()``, ``restart()``, ``stop()``."""

    def __init__(self, password: str = "s3cret-Pw%42", *, durable: bool = False):
        self.password = password
        #: False (tests): no fsync, for speed. True (benchmarks): PostgreSQL's own defaults.
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="mimir-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = None if os.geteuid() != 0 else ("postgres" if _user_exists("postgres") else "nobody")
        self.log = self.root / "server.log"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> PostgresServer:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chmod(self.root, 0o700)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            find_bin("initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
            "--no-locale", "--no-sync",
        )
        # Passwords are checked for the password user; the superuser is trusted on 127.0.0.1.
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
            "local all all trust\n"
        )
        self._start_server()
        self.admin(
            f"CREATE ROLE {PASSWORD_USER} LOGIN CREATEDB PASSWORD '{self.password}'",
        )
        return self

    def _start_server(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB"
        self._run(find_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        if self.data.exists():
            self._run(find_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def start_again(self) -> None:
        """Start the server after :meth:`stop`, on the same port, with the same data."""
        self._start_server()

    def restart(self, *, mode: str = "fast") -> None:
        """Stop the server (dropping every connection) and start it again on the same port."""
        self._run(find_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self._start_server()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- use -------------------------------------------------------------------------------
    def url(self, database: str = "postgres", *, user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str, database: str = "postgres") -> list:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.admin(f"CREATE DATABASE {name} OWNER {PASSWORD_USER}")
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _run(self, *argv, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in argv]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root, timeout=120)
        if check and proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}\n{log}")
        return proc


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
