"""Typed readers for the environment that fail loudly with the variable's name."""

from __future__ import annotations

import json
import os
import re
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


def envfloat(name: str, default: float, minimum: float | None = None) -> float:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {value!r}") from None
    if minimum is not None and not number >= minimum:  # NaN fails too
        raise ConfigurationError(f"{name} must be at least {minimum:g}, not {value}")
    return number


def envlist(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


_QUERY_PASSWORD = re.compile(r"(?P<name>(?:^|[?&;])password=)[^&;#]*", re.IGNORECASE)


def redacted(url: str) -> str:
    """The URL with its password replaced by ***, fit for an error message or a log line.
    Everything up to the last "@" is taken as user:password, however malformed the rest."""
    scheme, slashes, rest = url.partition("//")
    if not slashes:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return _QUERY_PASSWORD.sub(r"\g<name>***", scheme + slashes + rest)


def envurl(name: str, schemes: set[str], default: object = _UNSET) -> str:
    """A URL whose scheme is one of ``schemes`` and which names a host or a socket. Errors
    show the value with its password hidden."""
    value = envstr(name, default)
    if value == "" and default == "":
        return value
    parsed = urlparse(value)
    if parsed.scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise ConfigurationError(f"{name} must be a URL with scheme {allowed}, not {redacted(value)!r}")
    if not (parsed.hostname or "host=" in parsed.query or parsed.path.startswith("/")):
        raise ConfigurationError(f"{name} names no host: {redacted(value)!r}")
    return value


def envjson(name: str, default: object) -> object:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"{name} must be JSON: {error}") from None
