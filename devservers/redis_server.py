"""The local Redis server (noeviction, append-only file, password per data folder)."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import quote

from devservers.binaries import find_redis_server
from devservers.folder import (
    private_file,
)
from devservers.processes import (
    port_is_open,
)
from devservers.server import Server


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
