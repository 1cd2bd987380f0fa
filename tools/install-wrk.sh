#!/usr/bin/env bash
# Makes sure wrk (the HTTP load generator of benchmark B2, `python -m bench.concurrent`) is on
# the PATH, from Debian's `wrk` package. Idempotent: does nothing when wrk is already there.
# Installing needs root (CI and the development machines run as root). Prints wrk's path.
set -euo pipefail

if command -v wrk >/dev/null 2>&1; then
    command -v wrk
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-wrk: wrk is missing; run as root or: apt-get install wrk" >&2
    exit 1
fi

echo "install-wrk: installing Debian's wrk package (first time only)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends wrk >/dev/null
command -v wrk
