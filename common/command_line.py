"""What every command line shares: errors in one line, and `--help` that lists the settings.

Which variables a command reads is learnt by running its settings builder over an environment
that records every name looked up (with every optional branch switched on: SASL, Basic
credentials); what each one means and its default are README.md's tables with the header
`| variable | default | meaning |`, the one place they are written for people. In a checkout
the README beside the code is read; an installed package (the image) carries it as its
long description (`readme` in pyproject.toml), so --help works there too.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Final, NoReturn

from common.env import SettingsError

DISTRIBUTION: Final = "postback-pipeline"
CHECKOUT: Final = Path(__file__).resolve().parent.parent
TABLE_HEADER: Final = re.compile(r"^\|\s*variable\s*\|\s*default\s*\|\s*meaning\s*\|\s*$")
NAME: Final = re.compile(r"`([A-Z][A-Z0-9_]+)`")
# An environment that takes every optional branch of the settings builders, so that each name
# they can read is read once; the values only have to be valid.
PROBE: Final = {
    "KAFKA_BOOTSTRAP_SERVERS": "probe:9092",
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_USERNAME": "probe",
    "KAFKA_SASL_PASSWORD": "probe",
    "EDGE_BASIC_AUTH_USER": "probe",
    "EDGE_BASIC_AUTH_PASSWORD": "probe",
    "EVENTS_PSEUDONYM_KEY": "probe" * 8,
}


class CommandParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: `prog: error: ... (see prog --help)`,
    exit status 2, no usage block and never a traceback."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Recording(Mapping[str, str]):
    """An environment that remembers, in order, every name a settings builder looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: list[str] = []

    def _saw(self, name: object) -> None:
        if isinstance(name, str) and name not in self.read:
            self.read.append(name)

    def __getitem__(self, name: str) -> str:
        self._saw(name)
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        self._saw(name)
        return name in self._values

    def get(self, name: str, default: object = None) -> object:  # type: ignore[override]
        self._saw(name)
        return self._values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def variables_read(*builders: Callable[[Mapping[str, str]], object]) -> list[str]:
    """Every environment variable the builders read, in the order they read them."""
    names: list[str] = []
    for build in builders:
        environ = Recording(PROBE)
        try:
            build(environ)
        except SettingsError as error:  # PROBE must satisfy every builder
            raise AssertionError(f"{build!r} refused the probe environment: {error}") from None
        names += [name for name in environ.read if name not in names]
    return names


@dataclass(frozen=True, slots=True)
class Documented:
    """One row of a settings table: the variables it names, their default, what they do."""

    names: tuple[str, ...]
    default: str
    meaning: str
    mentions: str = ""  # the meaning as written, with the backticked names it mentions


def _plain(markdown: str) -> str:
    """Table cell markdown as terminal text: no backticks, emphasis or link targets."""
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", markdown)
    return text.replace("`", "").replace("**", "").strip()


def documented(readme: str) -> list[Documented]:
    """Every row of every `| variable | default | meaning |` table, in the README's order."""
    rows = []
    in_table = False
    for line in readme.splitlines():
        if TABLE_HEADER.match(line):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or set(cells[0]) <= {"-", " "}:
            continue
        rows.append(
            Documented(tuple(NAME.findall(cells[0])), _plain(cells[1]), _plain(cells[2]), cells[2])
        )
    return rows


def readme_text() -> str:
    """README.md of this checkout, else the installed distribution's long description."""
    beside = CHECKOUT / "README.md"
    if beside.is_file() and (CHECKOUT / "pyproject.toml").is_file():
        return beside.read_text(encoding="utf-8")
    try:
        return str(metadata.metadata(DISTRIBUTION).json.get("description", ""))
    except metadata.PackageNotFoundError:
        return ""


def _covering(rows: list[Documented], name: str) -> Documented | None:
    """The row that documents `name`: the one naming it, else one whose meaning mentions it
    (per-topic variants such as KAFKA_TOPIC_DLQ_PARTITIONS)."""
    named = [row for row in rows if name in row.names]
    mentioned = [row for row in rows if f"`{name}`" in row.mentions]
    found = named or mentioned
    return found[0] if found else None


def settings_help(names: Iterable[str], readme: str | None = None) -> str:
    """The README rows documenting `names`, as text for an argparse epilog; names no row
    documents are listed last, bare."""
    rows = documented(readme_text() if readme is None else readme)
    wanted = list(dict.fromkeys(names))
    covering = {name: _covering(rows, name) for name in wanted}
    chosen = [row for row in rows if row in covering.values()]
    lines = ["settings (environment variables, as documented in README.md):"]
    for row in chosen:
        default = row.default
        if default and not default.startswith("("):
            default = f"[default {default}]"
        lines.append(f"  {', '.join(row.names)}" + (f"  {default}" if default else ""))
        lines += textwrap.wrap(
            row.meaning, width=78, initial_indent=" " * 6, subsequent_indent=" " * 6
        )
    missing = [name for name, row in covering.items() if row is None]
    if missing:
        lines.append(f"  also: {', '.join(missing)}")
    return "\n".join(lines) if wanted else ""
