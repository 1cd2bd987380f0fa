#!/usr/bin/env bash
# Makes sure promtool and prometheus are on the PATH, from Debian's `prometheus` package.
# Idempotent: does nothing when both are already there. Installing needs root (CI and the
# development machines run as root). The package's service is never started: a policy-rc.d
# that forbids service starts is put in place for the install if the machine has none.
# Prints the path of promtool.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    command -v promtool
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-promtool: promtool is missing; run as root or: apt-get install prometheus" >&2
    exit 1
fi

POLICY=/usr/sbin/policy-rc.d
placed_policy=false
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    placed_policy=true
fi
cleanup() { if $placed_policy; then rm -f "$POLICY"; fi; }
trap cleanup EXIT

echo "install-promtool: installing Debian's prometheus package (first time only)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool
