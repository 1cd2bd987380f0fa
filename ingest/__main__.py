"""`python -m ingest`: the edge, configured from the environment (see README, "Settings")."""

from __future__ import annotations

import os
import sys

from common.env import settings_or_exit
from ingest.server import run
from ingest.settings import EdgeSettings


def main() -> int:
    run(settings_or_exit(EdgeSettings.from_environ, os.environ, "ingest"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
