"""`python -m ingest` as an orchestrator starts it: a refused configuration exits 2 with one
line naming the variables, before anything listens or connects."""

from __future__ import annotations

import os
import subprocess
import sys


def test_an_edge_open_to_anyone_beyond_loopback_exits_2_with_one_line() -> None:
    """A container started with the image's 0.0.0.0 and nothing else refuses to serve."""
    environ = {
        "PATH": os.environ["PATH"],
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "EDGE_HOST": "0.0.0.0",
        "EDGE_PORT": "0",
    }

    result = subprocess.run(
        [sys.executable, "-m", "ingest"], env=environ, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("ingest: invalid settings: EDGE_HOST=0.0.0.0 is not loopback")
    assert "EDGE_ALLOW_ANY_SENDER=true" in line
