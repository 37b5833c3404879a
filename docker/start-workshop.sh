#!/usr/bin/env bash
# Start script of the workshop image (its entrypoint).
#   start-workshop          take on the owner of /work, seed it, run JupyterLab and print the link
#   start-workshop seed     the same, but only seed /work
#
# Whose files: the image sets WORKSHOP_USER=student and starts this script as root. It reads the owner
# (uid:gid) of /work, gives `student` that uid:gid (usermod) and runs itself again as that user (setpriv), so
# whatever the workshop writes to work/ belongs to the folder's owner on the host. When /work is root's (a clone
# made by root; rootless podman or Docker, where root inside is your own user outside) it stays root and says so.
# Started as another user (`user:` in the compose file, or outside the image), it runs as that user.
#
# Seeding: a bind mount hides whatever the image put in /work, so the seed files (student notebooks, utils.py,
# the folder's README) are copied in on every start when missing; a student's edited copy is never overwritten.
# Solutions are copied into /work/solutions only when WORKSHOP_SOLUTIONS=1 (the instructor's machine).
#
# Configuration problems (a work folder that cannot be written, a short token) stop the container with one
# message saying what is wrong and how to fix it, and a non-zero exit status.
set -euo pipefail

WORK_DIR="${WORK_DIR:-/work}"
SEED_DIR="${SEED_DIR:-${WORKSHOP_HOME:-/opt/workshop}/seed}"
JUPYTER_IP="${JUPYTER_IP:-0.0.0.0}"
JUPYTER_PORT="${JUPYTER_PORT:-8888}"
HOST_PORT="${HOST_PORT:-$JUPYTER_PORT}"
START_NOTEBOOK="${START_NOTEBOOK:-00_setup_and_data.ipynb}"  # the notebook the link opens
MIN_TOKEN_LENGTH=16

say() { echo "start-workshop: $*"; }

stop() {  # stop PROBLEM FIX: the one message of a configuration problem, then exit non-zero
    {
        echo "=================================================================================================="
        echo "ERROR: $1"
        echo "FIX:   $2"
        echo "=================================================================================================="
    } >&2
    exit 1
}

# -- run as the owner of the work folder ---------------------------------------------------------------------
adopt_work_owner() {
    if [ "$(id -u)" != "0" ] || [ -z "${WORKSHOP_USER:-}" ]; then
        return 0  # not the image's root start: run as whoever started us
    fi
    [ -d "$WORK_DIR" ] || stop "the work folder $WORK_DIR does not exist in the container." \
        "mount your work folder there (docker compose does: ./work, or WORK_DIR=/path docker compose up)"
    local uid gid home
    uid="$(stat -c %u "$WORK_DIR")"
    gid="$(stat -c %g "$WORK_DIR")"
    if [ "$(id -u "$WORKSHOP_USER")" != "$uid" ] || [ "$(id -g "$WORKSHOP_USER")" != "$gid" ]; then
        groupmod --non-unique --gid "$gid" "$WORKSHOP_USER"
        usermod --non-unique --uid "$uid" --gid "$gid" "$WORKSHOP_USER"
    fi
    home="$(getent passwd "$WORKSHOP_USER" | cut -d: -f6)"
    mkdir -p "$home" && chown -R "$uid:$gid" "$home"
    if [ "$uid" = "0" ]; then
        say "the work folder belongs to root, so JupyterLab runs as root and its files there belong to root" \
            "too, as the folder does (under rootless podman or Docker, root in here is your own user outside)."
        return 0
    fi
    say "the work folder belongs to uid $uid (gid $gid): JupyterLab runs as that user ('$WORKSHOP_USER'), so" \
        "your files stay yours"
    exec setpriv --reuid="$uid" --regid="$gid" --clear-groups \
        env HOME="$home" USER="$WORKSHOP_USER" LOGNAME="$WORKSHOP_USER" "${BASH_SOURCE[0]}" "$@"
}

# -- the token -----------------------------------------------------------------------------------------------
# Never run without a token: an empty JUPYTER_TOKEN gets a random one. A chosen one must be long enough and
# fit into the printed link as it is.
check_token() {
    local token="${JUPYTER_TOKEN:-}"
    if [ -z "$token" ]; then
        token="$(python -c 'import secrets; print(secrets.token_hex(24))')"
    elif [ "${#token}" -lt "$MIN_TOKEN_LENGTH" ]; then
        stop "JUPYTER_TOKEN is too short (length ${#token}; at least $MIN_TOKEN_LENGTH): it is what keeps others out of your JupyterLab." \
            "leave JUPYTER_TOKEN unset (a random token is made and printed), or choose a longer one: JUPYTER_TOKEN=\$(openssl rand -hex 16) docker compose up"
    elif ! [[ "$token" =~ ^[A-Za-z0-9._~-]+$ ]]; then
        stop "JUPYTER_TOKEN may only contain letters, digits and . _ ~ - (it goes into the link as it is)." \
            "leave JUPYTER_TOKEN unset (a random token is made and printed), or choose one of those characters: JUPYTER_TOKEN=\$(openssl rand -hex 16) docker compose up"
    fi
    export JUPYTER_TOKEN="$token"  # jupyter_server reads it from the environment: it is on no command line
}

# -- the work folder must be writable ------------------------------------------------------------------------
check_work_writable() {
    local probe="$WORK_DIR/.workshop-write-check.$$" error uid mode
    mkdir -p "$WORK_DIR" 2> /dev/null || true
    if error="$(touch "$probe" 2>&1)"; then
        rm -f "$probe"
        return 0
    fi
    uid="$(stat -c %u "$WORK_DIR" 2> /dev/null || echo '?')"
    mode="$(stat -c %A "$WORK_DIR" 2> /dev/null || echo '?')"
    local problem="the workshop cannot write to its work folder ($WORK_DIR in the container): ${error##*: }."
    if [ ! -d "$WORK_DIR" ]; then
        stop "$problem It is not a folder." \
            "mount a folder there: WORK_DIR=/path/to/a/folder docker compose up (the default is ./work)"
    elif [[ "$error" == *"Read-only file system"* ]]; then
        stop "$problem It is mounted read-only." \
            "mount it writable: drop ':ro' / 'read_only: true' from its line under 'volumes:' in docker-compose.yaml, then: docker compose up"
    elif [ "$uid" = "65534" ]; then
        stop "$problem It belongs to a user this container cannot see (uid 65534, 'nobody'; e.g. another user's folder under rootless podman)." \
            "on the host, in the workshop folder: sudo chown -R \"\$(id -u):\$(id -g)\" work"
    elif [ "$uid" != "$(id -u)" ]; then
        stop "$problem JupyterLab runs as uid $(id -u) (a 'user:' setting or --user), but the folder belongs to uid $uid." \
            "remove the 'user:' setting (the container takes on the folder's owner by itself), or on the host: sudo chown -R $(id -u) work"
    elif [ "$(id -u)" != "0" ] && [ "${mode:1:1}" != "w" ]; then
        stop "$problem It belongs to uid $uid, whom JupyterLab runs as, but its owner may not write to it ($mode)." \
            "on the host, in the workshop folder: chmod -R u+rwX work"
    else
        stop "$problem The permissions allow it, so a security module refuses it (SELinux on Fedora/RHEL)." \
            "on the host, in the workshop folder: chcon -R -t container_file_t work   (or add ':z' to the volume in docker-compose.yaml)"
    fi
}

# -- seed files ----------------------------------------------------------------------------------------------
copy_missing() {  # copy_missing SOURCE_FILE TARGET_DIR
    local target
    target="$2/$(basename "$1")"
    if [ ! -e "$target" ]; then
        cp "$1" "$target"
        echo "seeded $target"
    fi
}

seed_work() {
    local file
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

adopt_work_owner "$@"
check_work_writable
if [ "${1:-}" = "seed" ]; then
    seed_work
    exit 0
fi
check_token
seed_work

# The link opens the first notebook (when it is there); so does the bare http://127.0.0.1:PORT/.
lab_path="/lab"
if [ -f "$WORK_DIR/$START_NOTEBOOK" ]; then
    lab_path="/lab/tree/$START_NOTEBOOK"
fi
root_flag=()
if [ "$(id -u)" = "0" ]; then
    root_flag=(--allow-root)
fi
echo "JupyterLab will be at: http://127.0.0.1:${HOST_PORT}${lab_path}?token=${JUPYTER_TOKEN}"
# allow_remote_access=False keeps jupyter_server's Host-header check (against DNS rebinding), which listening
# on 0.0.0.0 would otherwise switch off: requests must name 127.0.0.1, localhost or another loopback address.
exec jupyter lab "${root_flag[@]}" --no-browser --ip="$JUPYTER_IP" --port="$JUPYTER_PORT" \
    --ServerApp.root_dir="$WORK_DIR" --ServerApp.default_url="$lab_path" --LabApp.default_url="$lab_path" \
    --ServerApp.allow_remote_access=False --ServerApp.local_hostnames="['localhost', '127.0.0.1']" \
    --ServerApp.custom_display_url="http://127.0.0.1:${HOST_PORT}" \
    --ServerApp.terminado_settings="shell_command=['/bin/bash']"
