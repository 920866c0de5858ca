"""The local PostgreSQL server (run as `nobody` under root, password per data folder)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import re
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

from devservers.binaries import find_postgres_bindir
from devservers.folder import (
    DATABASE_NAME,
    PASSWORD_FILE,
    UNPRIVILEGED_USER,
    LocalServerError,
    password_digest,
)
from devservers.processes import (
    port_is_open,
)
from devservers.server import Server

# Written into the data folder at every start, so a folder made before passwords gets them too.
PG_HBA = """\
# Written by devservers at every start: every connection needs the password.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


class PostgresServer(Server):
    binary_name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, exit cleanly
    user = "postgres"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def ready_marker(self) -> Path:
        # Written only after initdb and database creation succeed: its absence means
        # an earlier run died half-way, and the folder is made again.
        return self.home / "initialised"

    @property
    def password_marker(self) -> Path:
        # A digest of the password the role holds; it differs when the folder predates
        # passwords or its password file was replaced.
        return self.home / "password-set"

    @property
    def run_as(self) -> str | None:
        return UNPRIVILEGED_USER if os.geteuid() == 0 else None

    def url(self) -> str:
        return f"postgresql://{self.user}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{DATABASE_NAME}"

    def start(self) -> None:
        if self.is_running() and self.password_is_set() and self.accepts_queries():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        if self.is_running() and not self.password_is_set():
            self.stop()  # started before it had a password: it gets one below
        self.reap_leftovers()
        bindir = find_postgres_bindir()
        if not self.ready_marker.exists():
            self.initialise(bindir)
        # Their owner is dead (reaped above); left in place they would refuse the start.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        for stale_lock in self.home.glob(".s.PGSQL.*"):
            stale_lock.unlink(missing_ok=True)
        port = self.choose_port()
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)
        links = self.hba_with_links()
        self.hand_over_to_server_user()
        if not self.password_is_set():
            self.set_password(bindir)
        self.spawn(
            [
                str(bindir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(port),
                "-c",
                f"listen_addresses={','.join(self.listen_hosts)}",
                *links,
                "-c",
                f"unix_socket_directories={self.home}",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=256MB",
                # A local server for development and tests: durability against an OS
                # crash is traded for speed. A killed postgres still loses nothing,
                # because committed WAL sits in the OS page cache.
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                # Statement counts per query, which `manage.py bench` reads (SQL per order).
                *self.statement_statistics(bindir),
                # No session timeouts here: settings.config sets them on every connection,
                # whichever server DATABASE_URL names.
            ],
            user=self.run_as,
        )
        self.wait_until(self.accepts_queries, "PostgreSQL to accept connections")
        if not self.ready_marker.exists():
            self.create_database()
            self.ready_marker.write_text("ok\n")

    def statement_statistics(self, bindir: Path) -> list[str]:
        """Load pg_stat_statements when these binaries ship it (options for postgres)."""
        shipped = list((bindir.parent / "lib").glob("**/pg_stat_statements.so"))
        return ["-c", "shared_preload_libraries=pg_stat_statements"] if shipped else []

    def hba_with_links(self) -> list[str]:
        """With link addresses to listen on: a pg_hba.conf that also lets clients in from those
        links, with loopback's method (options for postgres; none without links)."""
        if not self.listen:
            return []
        base = (self.data_dir / "pg_hba.conf").read_text()
        loopback = re.search(r"^host\s+all\s+all\s+127\.0\.0\.1/32\s+(\S+)", base, re.MULTILINE)
        method = loopback.group(1) if loopback else "trust"
        lines = [f"host all all {ipaddress.ip_interface(address).network} {method}" for address in self.listen]
        path = self.home / "pg_hba.links.conf"
        path.write_text(base + "\n# the cluster harness's links, for this run\n" + "\n".join(lines) + "\n")
        return ["-c", f"hba_file={path}"]

    def initialise(self, bindir: Path) -> None:
        if self.home.exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.password_marker.unlink(missing_ok=True)
        self.data_dir.mkdir(parents=True)
        self.hand_over_to_server_user()
        # Trust only until the first start, which writes PG_HBA and sets the password
        # before the server listens.
        self.run_server_tool(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            f"initdb failed in {self.data_dir}",
        )

    def password_is_set(self) -> bool:
        try:
            return self.password_marker.read_text().strip() == password_digest(self.password)
        except OSError:
            return False

    def set_password(self, bindir: Path) -> None:
        """Give the role the folder's password, in single-user mode: no server listens meanwhile,
        and the password goes through stdin, never a command line."""
        password = self.password
        if not re.fullmatch(r"[A-Za-z0-9_-]+", password):
            raise LocalServerError(f"the password in {self.run_dir / PASSWORD_FILE} must be URL-safe characters")
        self.run_server_tool(
            [str(bindir / "postgres"), "--single", "-D", str(self.data_dir), "-c", "fsync=off", "postgres"],
            f"could not set the password of the local PostgreSQL in {self.data_dir}",
            stdin=f"ALTER ROLE {self.user} PASSWORD '{password}';\n",
        )
        self.password_marker.write_text(password_digest(password) + "\n")

    def run_server_tool(self, argv: list[str], failure: str, stdin: str | None = None) -> None:
        """Run initdb or single-user postgres as the server's user; raise with its output on failure."""
        result = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            user=self.run_as,
            group=pwd.getpwnam(self.run_as).pw_gid if self.run_as else None,
            extra_groups=[] if self.run_as else None,
        )
        if result.returncode != 0:
            raise LocalServerError(f"{failure}:\n{result.stdout}{result.stderr}")

    def hand_over_to_server_user(self) -> None:
        """Under root, the data folder belongs to the unprivileged server user."""
        if self.run_as is None:
            return
        entry = pwd.getpwnam(self.run_as)
        for path in [self.home, *self.home.rglob("*")]:
            with contextlib.suppress(FileNotFoundError):
                os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        for parent in self.home.parents:
            if not os.stat(parent).st_mode & 0o001:
                raise LocalServerError(
                    f"PostgreSQL runs as '{self.run_as}' under root, and cannot reach {self.home} "
                    f"because {parent} is not searchable by others; set LOCAL_SERVERS_DIR elsewhere"
                )

    def connect(self, database: str = "postgres", **options):
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
            connect_timeout=2,
            **options,
        )

    def accepts_queries(self) -> bool:
        if self.port is None or not port_is_open(self.port):
            return False
        import psycopg

        try:
            with self.connect() as connection:
                connection.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def create_database(self) -> None:
        with self.connect(autocommit=True) as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
