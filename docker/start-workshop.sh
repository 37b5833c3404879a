#!/usr/bin/env bash
# Start script of the workshop image (its entrypoint).
#   start-workshop          seed /work, then run JupyterLab and print the link
#   start-workshop seed     only seed /work
# A bind mount hides whatever the image put in /work, so the seed files (student notebooks, utils.py, the
# folder's README) are copied in on every start when missing; a student's edited copy is never overwritten.
# Solutions are copied into /work/solutions only when WORKSHOP_SOLUTIONS=1 (the instructor's machine).
set -euo pipefail

WORK_DIR="${WORK_DIR:-/work}"
SEED_DIR="${SEED_DIR:-${WORKSHOP_HOME:-/opt/workshop}/seed}"
JUPYTER_IP="${JUPYTER_IP:-0.0.0.0}"
JUPYTER_PORT="${JUPYTER_PORT:-8888}"
HOST_PORT="${HOST_PORT:-$JUPYTER_PORT}"

copy_missing() {  # copy_missing SOURCE_FILE TARGET_DIR
    local target="$2/$(basename "$1")"
    if [ ! -e "$target" ]; then
        cp "$1" "$target"
        echo "seeded $target"
    fi
}

seed_work() {
    mkdir -p "$WORK_DIR"
    for file in "$SEED_DIR"/utils.py "$SEED_DIR"/README.md "$SEED_DIR"/notebooks/*.ipynb; do
        [ -f "$file" ] && copy_missing "$file" "$WORK_DIR"
    done
    if [ "${WORKSHOP_SOLUTIONS:-0}" = "1" ]; then
        mkdir -p "$WORK_DIR/solutions"
        for file in "$SEED_DIR"/notebooks/solutions/*.ipynb; do
            [ -f "$file" ] && copy_missing "$file" "$WORK_DIR/solutions"
        done
    fi
    return 0
}

seed_work
if [ "${1:-}" = "seed" ]; then
    exit 0
fi

# Never run without a token: an empty JUPYTER_TOKEN gets a random one.
token="${JUPYTER_TOKEN:-}"
if [ -z "$token" ]; then
    token="$(python -c 'import secrets; print(secrets.token_hex(24))')"
fi
export JUPYTER_TOKEN="$token"
root_flag=()
if [ "$(id -u)" = "0" ]; then
    root_flag=(--allow-root)  # the image runs as uid 1000; root only where a user or a test chose it
fi
echo "JupyterLab will be at: http://127.0.0.1:${HOST_PORT}/lab?token=${token}"
exec jupyter lab "${root_flag[@]}" --no-browser --ip="$JUPYTER_IP" --port="$JUPYTER_PORT" \
    --ServerApp.root_dir="$WORK_DIR" --IdentityProvider.token="$token" \
    --ServerApp.allow_remote_access=True --ServerApp.terminado_settings="shell_command=['/bin/bash']"
