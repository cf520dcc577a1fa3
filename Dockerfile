# SGPO images, one multi-stage file. Targets:
#   light      verifier, judge, orchestrator; also every service of the compose `cpu` profile (CPU torch)
#   generator  vLLM base image (GPU); the `vllm` engine runs in-process
#   trainer    CUDA torch (the PyPI Linux wheel of torch==2.13.0 carries its CUDA libraries)
# Every target runs as the non-root user `sgpo` (uid 10001), has ENTRYPOINT ["sgpo"] and a gRPC HEALTHCHECK;
# compose and the Helm chart pass `serve <service> --config ...` as the command.
#   docker build --target light -t sgpo/light .          (BuildKit: Docker >= 23, or DOCKER_BUILDKIT=1)
#   docker build --target generator -t sgpo/generator .
#   docker build --target trainer -t sgpo/trainer .
#
# No `# syntax=` line on purpose: the engine's built-in Dockerfile frontend builds this file (RUN --mount is
# in it since Docker 20.10), so no frontend image is pulled from Docker Hub.
#
# Build arguments (all optional; the defaults are the public images and indexes users expect):
#   PYTHON_IMAGE     a Debian-based image with python3.11 and its venv module (default python:3.11-slim);
#                    scripts/compose-e2e.sh passes a base made with debootstrap when Docker Hub is unreachable
#   VLLM_IMAGE       the generator's base: the vLLM release the `vllm` extra pins (0.32, torch 2.13 like ours)
#   TORCH_VERSION    torch of the light (CPU) and trainer (CUDA) targets
#   TORCH_CPU_INDEX  where the light target gets the CPU build of torch (no CUDA download). A wheel put in
#                    deploy/wheels/ (git-ignored, e.g. torch-2.13.0+cpu-cp311-...whl) is used instead (its
#                    small dependencies still come from PyPI).
# Build secret (optional): `--secret id=extra_ca,src=ca.pem` adds a CA bundle to pip's trusted roots for the
# duration of each pip command (a TLS-intercepting proxy). It is a secret mount, never a layer: the images
# carry no trace of it (a build ARG would show in `docker history`). deploy/docker/pip.sh applies it.
# Helper files are bind-mounted one by one (deploy/docker/*, pyproject.toml), so editing anything else in
# deploy/ leaves the layer cache alone, and only the small last layer depends on the package's source.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0

# ---- wheel: the sgpo package built once, installed by every target ----------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY services ./services
RUN --mount=type=secret,id=extra_ca \
    --mount=type=bind,source=deploy/docker/pip.sh,target=/tmp/sgpo-pip.sh \
    python3 -m venv /opt/build \
 && PIP=/opt/build/bin/pip sh /tmp/sgpo-pip.sh wheel --no-deps --wheel-dir /wheels .

# ---- runtime: Python venv, user, environment and health check shared by the Python targets ----------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/sgpo \
    SGPO_CACHE_DIR=/data/cache \
    VIRTUAL_ENV=/opt/sgpo \
    PATH=/opt/sgpo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# A venv works the same on python:3.11-slim and on a Debian base (whose system Python is "externally managed").
RUN python3 -m venv /opt/sgpo \
 && groupadd --system --gid 10001 sgpo \
 && useradd --system --uid 10001 --gid sgpo --create-home --home-dir /home/sgpo --shell /usr/sbin/nologin sgpo \
 && mkdir -p /data /etc/sgpo && chown sgpo:sgpo /data
COPY deploy/healthcheck.py /usr/local/bin/sgpo-healthcheck
RUN chmod 0755 /usr/local/bin/sgpo-healthcheck
WORKDIR /home/sgpo

# ---- light: CPU torch (~200 MB wheel instead of the CUDA build) -----------------------------------------
# Dependencies first, in a layer of their own (rebuilt only when pyproject.toml changes), then the package.
FROM runtime AS light
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
RUN --mount=type=secret,id=extra_ca \
    --mount=type=bind,source=deploy/docker/pip.sh,target=/tmp/sgpo-pip.sh \
    --mount=type=bind,source=deploy/docker/requirements.py,target=/tmp/sgpo-requirements.py \
    --mount=type=bind,source=pyproject.toml,target=/tmp/sgpo-pyproject.toml \
    --mount=type=bind,source=deploy/wheels,target=/tmp/local-wheels \
    if ls /tmp/local-wheels/torch-"${TORCH_VERSION}"+cpu-*.whl >/dev/null 2>&1; then \
      sh /tmp/sgpo-pip.sh install --find-links /tmp/local-wheels "torch==${TORCH_VERSION}+cpu"; \
    else \
      sh /tmp/sgpo-pip.sh install --index-url "${TORCH_CPU_INDEX}" "torch==${TORCH_VERSION}"; \
    fi \
 && python3 /tmp/sgpo-requirements.py /tmp/sgpo-pyproject.toml --without torch > /tmp/requirements.txt \
 && sh /tmp/sgpo-pip.sh install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && python3 -c "import torch; assert not torch.version.cuda, torch.version.cuda"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-deps /wheels/sgpo-*.whl && pip check
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["sgpo-healthcheck"]
ENTRYPOINT ["sgpo"]
CMD ["serve", "verifier"]

# ---- trainer: CUDA torch ----------------------------------------------------------------------------------
FROM runtime AS trainer
ARG TORCH_VERSION=2.13.0
RUN --mount=type=secret,id=extra_ca \
    --mount=type=bind,source=deploy/docker/pip.sh,target=/tmp/sgpo-pip.sh \
    --mount=type=bind,source=deploy/docker/requirements.py,target=/tmp/sgpo-requirements.py \
    --mount=type=bind,source=pyproject.toml,target=/tmp/sgpo-pyproject.toml \
    sh /tmp/sgpo-pip.sh install "torch==${TORCH_VERSION}" \
 && python3 /tmp/sgpo-requirements.py /tmp/sgpo-pyproject.toml --without torch > /tmp/requirements.txt \
 && sh /tmp/sgpo-pip.sh install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-deps /wheels/sgpo-*.whl && pip check
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 CMD ["sgpo-healthcheck"]
ENTRYPOINT ["sgpo"]
CMD ["serve", "trainer"]

# ---- generator: vLLM's image (CUDA, its own torch) plus sgpo without touching torch -----------------------
FROM ${VLLM_IMAGE} AS generator
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/sgpo \
    SGPO_CACHE_DIR=/data/cache
RUN --mount=type=secret,id=extra_ca \
    --mount=type=bind,source=deploy/docker/pip.sh,target=/tmp/sgpo-pip.sh \
    --mount=type=bind,source=deploy/docker/requirements.py,target=/tmp/sgpo-requirements.py \
    --mount=type=bind,source=pyproject.toml,target=/tmp/sgpo-pyproject.toml \
    --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    python3 /tmp/sgpo-requirements.py /tmp/sgpo-pyproject.toml --without torch > /tmp/requirements.txt \
 && PIP="python3 -m pip" sh /tmp/sgpo-pip.sh install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && PIP="python3 -m pip" sh /tmp/sgpo-pip.sh install --no-deps /wheels/sgpo-*.whl \
 && (getent group 10001 || groupadd --system --gid 10001 sgpo) \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/sgpo --shell /usr/sbin/nologin sgpo \
 && mkdir -p /data /etc/sgpo && chown 10001:10001 /data
COPY deploy/healthcheck.py /usr/local/bin/sgpo-healthcheck
RUN chmod 0755 /usr/local/bin/sgpo-healthcheck
WORKDIR /home/sgpo
USER 10001:10001
# vLLM loads and compiles the model before the gRPC server reports SERVING: give it time.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 CMD ["sgpo-healthcheck"]
ENTRYPOINT ["sgpo"]
CMD ["serve", "generator"]
