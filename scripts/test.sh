#!/usr/bin/env bash
# The whole test suite on a fresh machine, no Docker needed: the virtual environment from Pipfile.lock, then
# lint (ruff, hadolint) and pytest (unit tests, CLI runs, every notebook at CI size, the browser test).
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -m "not slow"   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

step() {  # step NAME COMMAND...: run a step and print its wall time
    local name="$1" start=$SECONDS
    shift
    echo "=== $name"
    "$@"
    echo "=== $name: $((SECONDS - start)) s"
}

if ! command -v pipenv > /dev/null; then
    step "install pipenv" python3 -m pip install --quiet pipenv
fi
export PIPENV_VENV_IN_PROJECT=1 PIPENV_VERBOSITY=-1
step "environment from Pipfile.lock" pipenv sync --dev
export HF_HUB_OFFLINE=1  # tests never reach a model hub; a missing file fails fast
export WORKSHOP_TEST_DATA="${WORKSHOP_TEST_DATA:-$(mktemp -d)/synthetic}"  # one synthetic dataset per run
step "ruff" .venv/bin/ruff check .
step "hadolint" .venv/bin/hadolint Dockerfile
step "student notebooks up to date" .venv/bin/python -m workshop_lib.teaching --check
step "pytest" .venv/bin/pytest --durations=15 "$@"
