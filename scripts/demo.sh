#!/usr/bin/env bash
# Set up and run the demo: examples/hello behind a real Mongrel2 on http://127.0.0.1:6767.
# Try: curl http://127.0.0.1:6767/brubeck   Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/brubeck run examples/hello/app.py:app --mongrel2 --port "${PORT:-6767}" "$@"
