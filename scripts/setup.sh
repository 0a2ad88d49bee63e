#!/usr/bin/env bash
# Install what Brubeck needs on a Debian/Ubuntu machine (run as root): Mongrel2, a Python venv
# in .venv with the package and its dev tools. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mongrel2 >/dev/null 2>&1 && command -v m2sh >/dev/null 2>&1 || need_apt+=(mongrel2-core)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The services tests build a C worker (examples/services/upper_worker.c) against libzmq.
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
[ -f /usr/include/zmq.h ] || need_apt+=(libzmq3-dev)
if ! command -v python3 >/dev/null 2>&1; then
  need_apt+=(python3 python3-venv python3-pip)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup: Brubeck needs Python >= 3.11, this python3 is {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup: ready ($(.venv/bin/python --version), mongrel2 at $(command -v mongrel2))"
