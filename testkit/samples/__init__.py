"""Realistic postbacks, one file per kind and format, shared by tests and benchmarks.

A kind is the file's path below this folder without its extension: "v2/sms_mt_n202",
"v1/mms_mo_n401_notification", "malformed/truncated". v2/ holds JSON bodies, v1/ XML bodies
(upper-case v1 and the lower-case Sinch dialect), malformed/ bodies that must be dead-lettered.
Bytes are returned exactly as stored: no newline is added or stripped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

_ROOT: Final = Path(__file__).resolve().parent
_VALID_DIRS: Final = ("v2", "v1")
_MALFORMED_DIR: Final = "malformed"
_CONTENT_TYPES: Final = {".json": "application/json", ".xml": "text/xml"}


def _files(folder: str) -> list[Path]:
    return sorted(path for path in (_ROOT / folder).iterdir() if path.is_file())


def _kind(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _path(kind: str) -> Path:
    folder, _, stem = kind.partition("/")
    matches = [path for path in _files(folder) if path.stem == stem] if stem else []
    if len(matches) != 1:
        raise KeyError(f"no single sample named {kind!r}")
    return matches[0]


def load(kind: str) -> bytes:
    """The body of one sample, e.g. load("v2/sms_mt_n202")."""
    return _path(kind).read_bytes()


def content_type(kind: str) -> str:
    """The Content-Type a provider would plausibly send with this sample."""
    return _CONTENT_TYPES.get(_path(kind).suffix, "application/octet-stream")


def all_valid() -> list[tuple[str, bytes]]:
    """Every body that must become an event, as (kind, body), v2 first, in name order."""
    return [(_kind(path), path.read_bytes()) for folder in _VALID_DIRS for path in _files(folder)]


def all_malformed() -> list[tuple[str, bytes]]:
    """Every body that must be dead-lettered, as (kind, body), in name order."""
    return [(_kind(path), path.read_bytes()) for path in _files(_MALFORMED_DIR)]
