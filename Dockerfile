# The workshop image: JupyterLab + workshop_lib, installed from Pipfile.lock (no re-resolving).
# Build arguments:
#   BASE_IMAGE     a Python 3.11 image (default: the public python:3.11-slim; any Debian with python3.11 works)
#   FETCH_WEIGHTS  1 = bake the download-only ImageNet weights into the image when the network allows
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
    MPLCONFIGDIR=/tmp/matplotlib \
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

COPY workshop_lib/ workshop_lib/
ARG FETCH_WEIGHTS=1
RUN if [ "$FETCH_WEIGHTS" = "1" ]; then \
        python -m workshop_lib weights fetch wide_resnet50_2 resnet18 mobilenet_v2 vit_base_patch16_224.mae \
        || echo "WARNING: no network for the ImageNet weights; efficientnet_lite0 (bundled) still works offline."; \
    fi \
    && python -m workshop_lib weights list

# Seed files: the start script copies them into the mounted /work when they are missing there.
COPY notebooks/ seed/notebooks/
COPY work/utils.py work/README.md seed/
COPY docker/start-workshop.sh /usr/local/bin/start-workshop

RUN useradd --create-home --uid 1000 --shell /bin/bash student \
    && mkdir -p /work && chown student:student /work
USER 1000:1000
WORKDIR /work
EXPOSE 8888
ENTRYPOINT ["start-workshop"]
