#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, then lint, types and tests.
# Used by the README and by .ci/run, so both run exactly the same thing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "test.sh: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
echo "test.sh: installing the project with its dev dependencies" >&2
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'

echo "test.sh: ruff" >&2
.venv/bin/ruff check service tests
.venv/bin/ruff format --check service tests
echo "test.sh: mypy" >&2
.venv/bin/mypy
echo "test.sh: pytest" >&2
.venv/bin/pytest "$@"
