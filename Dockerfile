# The workshop image: JupyterLab + workshop_lib, installed from Pipfile.lock (no re-resolving).
# Build arguments:
#   BASE_IMAGE     a Python 3.11 image (default: the public python:3.11-slim; any Debian with python3.11 works)
#   FETCH_WEIGHTS  1 = bake the download-only ImageNet weights into the image when the network allows
#
# Who runs JupyterLab: the container starts as root only for its entrypoint (docker/start-workshop.sh). That
# script reads the owner (uid:gid) of the mounted /work, gives the account `student` that uid:gid and runs
# JupyterLab as it (setpriv, from util-linux), so everything the workshop writes into work/ belongs to the
# folder's owner on the host, whoever that is (uid 1000, 1234, ...). When /work is root's (a clone made by root,
# rootless podman/Docker, which map your own user to root inside), JupyterLab runs as root and says so.
# `docker compose exec` lands as root; `docker compose exec -u student ...` runs as the folder's owner.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIPENV_VENV_IN_PROJECT=1 \
    WORKSHOP_HOME=/opt/workshop \
    HF_HOME=/opt/workshop/cache/huggingface \
    TORCH_HOME=/opt/workshop/cache/torch \
    PATH=/opt/workshop/.venv/bin:$PATH \
    PYTHONPATH=/work

# Extra CA certificates for TLS-inspecting proxies: put *.crt files into docker/extra-ca/ (never committed).
COPY docker/extra-ca/ /usr/local/share/ca-certificates/
RUN (update-ca-certificates || true) \
    && python3 -m venv /opt/pipenv \
    && /opt/pipenv/bin/pip install --no-cache-dir pipenv==2026.10.3

WORKDIR /opt/workshop
# Dependencies first, so editing the library does not re-install torch: the editable install of
# workshop_lib only needs pyproject.toml and the package folder to exist.
COPY Pipfile Pipfile.lock pyproject.toml ./
RUN mkdir workshop_lib && touch workshop_lib/__init__.py \
    && /opt/pipenv/bin/pipenv sync \
    && rm -rf /root/.cache

# The account JupyterLab runs as; the start script changes its uid/gid to those of /work at every start
# (usermod/groupmod from passwd, setpriv from util-linux: both in every Debian base; checked here).
RUN command -v setpriv && command -v usermod && command -v groupmod \
    && useradd --create-home --uid 1000 --shell /bin/bash student \
    && mkdir -p /work && chown student:student /work
ENV WORKSHOP_USER=student

COPY workshop_lib/ workshop_lib/
ARG FETCH_WEIGHTS=1
# The weight caches are writable by everyone: the user JupyterLab runs as is only known at start, and a
# notebook may fetch more weights. (chmod in the same layer as the download, so the files are not copied.)
RUN mkdir -p "$HF_HOME" "$TORCH_HOME" \
    && if [ "$FETCH_WEIGHTS" = "1" ]; then \
        python -m workshop_lib weights fetch wide_resnet50_2 resnet18 mobilenet_v2 vit_base_patch16_224.mae \
        || echo "WARNING: no network for the ImageNet weights; efficientnet_lite0 (bundled) still works offline."; \
    fi \
    && python -m workshop_lib weights list \
    && chmod -R a+rwX /opt/workshop/cache

# JupyterLab settings (docker/jupyter/): no "get notified about official Jupyter news?" pop-up.
COPY docker/jupyter/ /etc/jupyter/
# Seed files: the start script copies them into the mounted /work when they are missing there.
COPY notebooks/ seed/notebooks/
COPY work/utils.py work/README.md seed/
COPY docker/start-workshop.sh /usr/local/bin/start-workshop

WORKDIR /work
EXPOSE 8888
ENTRYPOINT ["start-workshop"]
