"""Where every benchmark's JSON goes, written the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def save(report: dict[str, Any], out: Path) -> None:
    """Write `report` as indented JSON to `out` (bench/results/ is gitignored)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
