# syntax=docker/dockerfile:1.7
# SGPO images, one multi-stage file. Targets:
#   light      verifier, judge, orchestrator; also every service of the compose `cpu` profile (CPU torch)
#   generator  vLLM base image (GPU); the `vllm` engine runs in-process
#   trainer    CUDA torch (the PyPI Linux wheel of torch==2.13.0 carries its CUDA libraries)
# Every target runs as the non-root user `sgpo` (uid 10001), has ENTRYPOINT ["sgpo"] and a gRPC HEALTHCHECK;
# compose and the Helm chart pass `serve <service> --config ...` as the command.
#   docker build --target light -t sgpo/light .
#   docker build --target generator -t sgpo/generator .
#   docker build --target trainer -t sgpo/trainer .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG VLLM_IMAGE=vllm/vllm-openai:v0.11.0

# ---- wheel: the sgpo package built once, installed by every target ----------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY services ./services
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .
# The package's dependencies minus torch, for the vLLM image (it brings the torch build vLLM was compiled with).
RUN python - <<'EOF'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
keep = [d for d in deps if not re.match(r"torch\s*([\[=<>!~;]|$)", d)]
open("/wheels/requirements-no-torch.txt", "w").write("\n".join(keep) + "\n")
EOF

# ---- runtime: user, environment and health check shared by the Python-slim targets ------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/sgpo \
    SGPO_CACHE_DIR=/data/cache
RUN groupadd --system --gid 10001 sgpo \
 && useradd --system --uid 10001 --gid sgpo --create-home --home-dir /home/sgpo --shell /usr/sbin/nologin sgpo \
 && mkdir -p /data /etc/sgpo && chown sgpo:sgpo /data
COPY --chmod=0755 deploy/healthcheck.py /usr/local/bin/sgpo-healthcheck
WORKDIR /home/sgpo

# ---- light: CPU torch from the PyTorch CPU index (~200 MB instead of the CUDA build) ----------------------
FROM runtime AS light
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    python -m pip install --index-url "${TORCH_CPU_INDEX}" torch==2.13.0 \
 && python -m pip install /wheels/sgpo-*.whl
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["sgpo-healthcheck"]
ENTRYPOINT ["sgpo"]
CMD ["serve", "verifier"]

# ---- trainer: CUDA torch ----------------------------------------------------------------------------------
FROM runtime AS trainer
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    python -m pip install torch==2.13.0 \
 && python -m pip install /wheels/sgpo-*.whl
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
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    python3 -m pip install -r /wheels/requirements-no-torch.txt \
 && python3 -m pip install --no-deps /wheels/sgpo-*.whl \
 && (getent group 10001 || groupadd --system --gid 10001 sgpo) \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/sgpo --shell /usr/sbin/nologin sgpo \
 && mkdir -p /data /etc/sgpo && chown 10001:10001 /data
COPY --chmod=0755 deploy/healthcheck.py /usr/local/bin/sgpo-healthcheck
WORKDIR /home/sgpo
USER 10001:10001
# vLLM loads and compiles the model before the gRPC server reports SERVING: give it time.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 CMD ["sgpo-healthcheck"]
ENTRYPOINT ["sgpo"]
CMD ["serve", "generator"]
