"""The postback URL space: `/postbacks` and `/postbacks/{source}`."""

from __future__ import annotations

import re

from common.raw_record import DEFAULT_SOURCE

POSTBACK_PREFIX = "/postbacks"
SOURCE_PATTERN = re.compile(r"[a-z0-9_-]{1,64}")
INVALID_SOURCE = "invalid"


def is_postback_path(path: str) -> bool:
    return path == POSTBACK_PREFIX or path.startswith(POSTBACK_PREFIX + "/")


def source_label(path: str) -> str:
    """The source a postback path names, or `invalid` when it is not a well-formed label."""
    if path == POSTBACK_PREFIX:
        return DEFAULT_SOURCE
    candidate = path[len(POSTBACK_PREFIX) + 1 :]
    return candidate if SOURCE_PATTERN.fullmatch(candidate) else INVALID_SOURCE


def route_source(path: str) -> str | None:
    """The `{source}` a postback route gives `path` (checked later), None if no route matches.

    `/postbacks` is the default source; `/postbacks/x` is `x`; `/postbacks/`, `/postbacks/x/`
    and `/postbacks/x/y` match no route (a trailing slash is not redirected: see app.py).
    """
    if path == POSTBACK_PREFIX:
        return DEFAULT_SOURCE
    candidate = path[len(POSTBACK_PREFIX) + 1 :]
    if not candidate or "/" in candidate:
        return None
    return candidate
