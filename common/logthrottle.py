"""Say it once, then periodically with a count: a logging filter for a client's retry floods.

While the cluster is unreachable, aiokafka logs a connection error for every reconnect attempt
of every client: about twenty lines a second from one service, thousands in an outage, which
bury the one line that says what is wrong. This filter lets the first record of a kind through,
holds back the alike records that follow, and lets one through again every `interval_s` with
the number held back since (`suppressed` field, and a note in the message). Records are alike
when they come from the same logger at the same level with the same message template, whatever
the arguments (the node id, the address).

Only loggers under the given prefixes are throttled: our own log lines are deliberate (each
says something once), and the edge's refusals have their own accounting.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

MAX_KINDS: Final = 1000  # a template built with an f-string would otherwise grow the table


class RepeatThrottle(logging.Filter):
    def __init__(
        self,
        prefixes: tuple[str, ...] = ("aiokafka",),
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._interval_s = interval_s
        self._clock = clock
        # kind -> (when one was last let through, how many were held back since)
        self._kinds: OrderedDict[tuple[str, int, str], tuple[float, int]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self._interval_s:
            self._kinds[kind] = (seen[0], seen[1] + 1)
            return False
        held_back = seen[1] if seen is not None else 0
        self._kinds[kind] = (now, 0)
        self._kinds.move_to_end(kind)
        if len(self._kinds) > MAX_KINDS:
            self._kinds.popitem(last=False)
        if seen is not None and held_back:
            seconds = now - seen[0]
            record.msg = f"{record.getMessage()} [{held_back} alike held back in {seconds:.0f} s]"
            record.args = None
            fields = getattr(record, "fields", None)
            record.fields = {
                **(fields if isinstance(fields, dict) else {}),
                "suppressed": held_back,
            }
        return True
