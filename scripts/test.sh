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

# Real servers the integration tests start themselves: PostgreSQL (Debian package) and the two
# FHIR peers (built from Maven Central and the npm registry). Building here, before pytest, makes
# a build failure visible on its own; the tests fail (never skip) when a peer cannot start.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "test.sh: installing PostgreSQL (Debian package)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
# The browser tests (tests/browser) drive Debian's Chromium headless through Playwright; they
# fail, never skip, without it (Playwright's own browser download is not used).
if [ ! -x /usr/bin/chromium ]; then
  echo "test.sh: installing Chromium (Debian package)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "test.sh: building the FHIR peers" >&2
peers/medplum/build
peers/hapi/build
echo "test.sh: building the OIDC peer (sign-in and browser tests; carries axe-core)" >&2
peers/oidc/build

echo "test.sh: ruff" >&2
.venv/bin/ruff check service tests bench
.venv/bin/ruff format --check service tests bench
echo "test.sh: mypy" >&2
.venv/bin/mypy
echo "test.sh: pytest" >&2
.venv/bin/pytest "$@"
