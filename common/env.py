"""Typed reads of environment variables that fail fast and name the variable at fault.

Every service builds its frozen settings object once at start-up from an environ mapping (a
dict in tests), so a typo in a deployment stops the process with the variable's name instead
of surfacing as a strange runtime behaviour hours later.

A settings class is its own table. Each field says in one line which variable sets it, how its
text is read (a cast) and its default, as starlette's `Config.get` does in one call:

    port: int = setting("EDGE_PORT", port, 8080)

The default is the field's dataclass default too, so it is written once. `Settings.from_environ`
reads every field that way; `section(...)` fields are nested settings read from the same environ.
Checks that involve several fields go in the class's `__post_init__`, and raise SettingsError
naming the variables.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SettingsT = TypeVar("SettingsT")
T = TypeVar("T")

# (variable name, its text as set) -> value; raises SettingsError naming the variable.
Cast = Callable[[str, str], T]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "console")  # common/logs.py
_SPEC = "postback-pipeline.env"  # the key of a field's read spec in its metadata


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


# --- how a field is read ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variable(Generic[T]):
    """One environment variable: its name, how its text is read, its default."""

    name: str
    cast: Cast[T]
    default: T
    required: str | None = None  # None: optional (the default applies); else what to say

    def read(self, environ: Mapping[str, str]) -> T:
        raw = environ.get(self.name)
        if raw is None or not raw.strip():  # unset and empty mean the same: the default
            if self.required is not None:
                raise SettingsError(f"{self.name}: required, {self.required}")
            return self.default
        return self.cast(self.name, raw)


@dataclass(frozen=True, slots=True)
class _Section(Generic[T]):
    build: Callable[[Mapping[str, str]], T]

    def read(self, environ: Mapping[str, str]) -> T:
        return self.build(environ)


def setting(variable: str, cast: Cast[T], default: T) -> T:
    """A field set by `variable`, read with `cast`; `default` when unset or empty."""
    spec = Variable(variable, cast, default)
    field: T = dataclasses.field(default=default, metadata={_SPEC: spec})
    return field


def required(variable: str, cast: Cast[T], *, example: str) -> T:
    """A field `variable` must set; unset, start-up fails with `example`."""
    spec: Variable[Any] = Variable(variable, cast, None, required=f"e.g. {example}")
    field: T = dataclasses.field(metadata={_SPEC: spec})
    return field


def section(build: Callable[[Mapping[str, str]], T]) -> T:
    """A field holding nested settings (Kafka access, topics), built from the same environ."""
    field: T = dataclasses.field(metadata={_SPEC: _Section(build)})
    return field


def log_level_setting() -> str:
    """LOG_LEVEL, which every service reads the same way."""
    return setting("LOG_LEVEL", choice(*LOG_LEVELS), "INFO")


def log_format_setting() -> str:
    """LOG_FORMAT, which every service reads the same way."""
    return setting("LOG_FORMAT", choice(*LOG_FORMATS), "json")


class Settings:
    """Base of every settings dataclass: `from_environ` reads each field from its line."""

    __slots__ = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Self:
        values = {
            field.name: field.metadata[_SPEC].read(environ)
            for field in dataclasses.fields(cls)  # type: ignore[arg-type]  # subclasses are dataclasses
        }
        build: Callable[..., Self] = cls
        return build(**values)


# --- casts: text to value, or SettingsError naming the variable ---------------------------------


def text(variable: str, raw: str) -> str:
    return raw.strip()


def secret(variable: str, raw: str) -> Secret:
    # Taken verbatim: leading or trailing spaces may be part of a password.
    return Secret(raw)


def _bounded(
    variable: str, value: T, minimum: Any, maximum: Any, below: Any = None, why: str = ""
) -> T:
    if minimum is not None and value < minimum:
        raise SettingsError(f"{variable}: must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{variable}: must be at most {maximum}, got {value}")
    if below is not None and value >= below:
        reason = f" ({why})" if why else ""
        raise SettingsError(f"{variable}: must be below {below}{reason}, got {value}")
    return value


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Cast[int]:
    def cast(variable: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise SettingsError(f"{variable}: expected an integer, got {raw!r}") from None
        return _bounded(variable, value, minimum, maximum)

    return cast


def seconds_as_ms(*, minimum: int) -> Cast[int]:
    """Whole seconds in the variable (what people write), milliseconds in the field."""
    seconds = integer(minimum=minimum)

    def cast(variable: str, raw: str) -> int:
        return seconds(variable, raw) * 1000

    return cast


def number(
    *, minimum: float | None = None, below: float | None = None, why: str = ""
) -> Cast[float]:
    def cast(variable: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise SettingsError(f"{variable}: expected a number, got {raw!r}") from None
        return _bounded(variable, value, minimum, None, below, why)

    return cast


# Every listening port: 0 lets the system pick a free one (tests do).
port_number = integer(minimum=0, maximum=65535)


def flag(variable: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{variable}: expected true or false, got {raw!r}")


def items(variable: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list; blanks between commas are dropped."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def networks(variable: str, raw: str) -> tuple[IPNetwork, ...]:
    """CIDR list such as `10.0.0.0/8, 2001:db8::/32`; a bare address means one host."""
    parsed = []
    for item in items(variable, raw):
        try:
            parsed.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(f"{variable}: {item!r} is not an IP address or CIDR") from None
    return tuple(parsed)


def choice(*choices: str) -> Cast[str]:
    def cast(variable: str, raw: str) -> str:
        value = raw.strip()
        if value not in choices:
            raise SettingsError(f"{variable}: expected one of {', '.join(choices)}, got {value!r}")
        return value

    return cast


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
