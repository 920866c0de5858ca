"""A data folder of the local servers: where it is, and the password its servers ask for."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

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


def password_digest(password: str) -> str:
    """What a server's marker file keeps to say which password it was given (never the password)."""
    return hashlib.sha256(password.encode()).hexdigest()
