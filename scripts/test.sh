#!/usr/bin/env bash
# Set up and run the whole test suite: lint, unit tests, and end-to-end tests through a real
# Mongrel2. Exits non-zero on any failure, including "no tests ran".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check brubeck tests examples bench
.venv/bin/ruff format --check brubeck tests examples bench
# The library's type hints are checked (the tests and scripts are not).
.venv/bin/mypy brubeck
# The docs site must build without broken links or missing pages.
.venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
# pytest exits 5 when it collects no tests: that is a failure here, as any non-zero code is.
.venv/bin/python -m pytest -q "$@"
