"""`python -m ingest`: the edge, configured from the environment (see README, "Settings")."""

from __future__ import annotations

import logging
import os
import sys

from common.env import SettingsError
from ingest.server import run
from ingest.settings import EdgeSettings


def main() -> int:
    try:
        settings = EdgeSettings.from_environ(os.environ)
    except SettingsError as error:
        logging.basicConfig()
        logging.getLogger("ingest").critical("invalid settings: %s", error)
        return 2
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
