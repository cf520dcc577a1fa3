#!/usr/bin/env bash
# The project's test command (README, CI): install, check generated stubs, lint, type-check, check the
# import layers, test.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e ".[dev]"
python3 scripts/gen_protos.py --check
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy services/sgpo/core
lint-imports --no-cache  # the layer contracts in pyproject.toml: imports run one way
python3 -m pytest -m "not slow and not gpu" "$@"
