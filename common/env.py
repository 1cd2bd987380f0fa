"""Typed reads of environment variables that fail fast and name the variable at fault.

Every service builds its frozen settings object once at start-up from an environ mapping (a
dict in tests), so a typo in a deployment stops the process with the variable's name instead
of surfacing as a strange runtime behaviour hours later.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SettingsT = TypeVar("SettingsT")


class SettingsError(ValueError):
    """A variable is missing or malformed; the message names it and says what was expected."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential that never shows in `repr`, logs or tracebacks; `reveal()` when needed."""

    _value: str

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


class Env:
    """Reads one environ mapping with casts; each getter takes the variable name and default."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def optional_text(self, name: str) -> str | None:
        return self._raw(name)

    def secret(self, name: str) -> Secret | None:
        # Secrets are taken verbatim: leading or trailing spaces may be part of a password.
        value = self._environ.get(name)
        return Secret(value) if value else None

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(f"{name}: must be at least {minimum}, got {value}")
        return value

    def number(self, name: str, default: float, *, minimum: float | None = None) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}: expected a number, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise SettingsError(f"{name}: must be at least {minimum}, got {value}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(f"{name}: expected true or false, got {raw!r}")

    def items(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        raw = self._raw(name)
        if raw is None:
            return default
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def networks(self, name: str, default: tuple[str, ...]) -> tuple[IPNetwork, ...]:
        """CIDR list such as `10.0.0.0/8, 2001:db8::/32`; a bare address means one host."""
        networks = []
        for item in self.items(name, default):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise SettingsError(f"{name}: {item!r} is not an IP address or CIDR") from None
        return tuple(networks)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise SettingsError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
        return value


def settings_or_exit(
    build: Callable[[Mapping[str, str]], SettingsT], environ: Mapping[str, str], service: str
) -> SettingsT:
    """Settings for a service's `main`, or exit status 2 with the variable named on stderr.

    Logging is not configured yet at this point (its level is a setting), hence stderr.
    """
    try:
        return build(environ)
    except SettingsError as error:
        print(f"{service}: invalid settings: {error}", file=sys.stderr)
        raise SystemExit(2) from None
