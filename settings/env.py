"""Typed readers for the environment that fail loudly with the variable's name."""

from __future__ import annotations

import json
import os
from urllib.parse import urlparse


class ConfigurationError(Exception):
    """A setting is missing or malformed; the message names the variable."""


_UNSET = object()
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def envstr(name: str, default: object = _UNSET) -> str:
    value = os.environ.get(name, "")
    if value == "":
        if default is _UNSET:
            raise ConfigurationError(f"{name} is required but not set")
        return default  # type: ignore[return-value]
    return value


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value == "":
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ConfigurationError(f"{name} must be one of true/false/1/0/yes/no/on/off, not {value!r}")


def envint(name: str, default: int, minimum: int | None = None) -> int:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {value!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {number}")
    return number


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {value!r}") from None


def envlist(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def envurl(name: str, schemes: set[str], default: object = _UNSET) -> str:
    """A URL whose scheme is one of ``schemes`` and which names a host or a socket."""
    value = envstr(name, default)
    if value == "" and default == "":
        return value
    parsed = urlparse(value)
    if parsed.scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise ConfigurationError(f"{name} must be a URL with scheme {allowed}, not {value!r}")
    if not (parsed.hostname or "host=" in parsed.query or parsed.path.startswith("/")):
        raise ConfigurationError(f"{name} names no host: {value!r}")
    return value


def envjson(name: str, default: object) -> object:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"{name} must be JSON: {error}") from None
