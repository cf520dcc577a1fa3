"""Imports run one way: the import-linter contracts in pyproject.toml hold (as scripts/test.sh checks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is in the dev extra")
def test_import_contracts_are_kept() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "services")}
    r = subprocess.run(
        ["lint-imports", "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_the_generator_base_module_imports_no_engine_and_no_task() -> None:
    """engine.py is the base (protocol, helpers); factory.py builds engines; neither resolves model aliases."""
    code = (
        "import sys; import sgpo.generator.factory; "
        "bad = [m for m in sys.modules if m.startswith(('sgpo.tasks', 'sgpo.launch', 'sgpo.generator.hf', "
        "'sgpo.generator.vllm_engine'))]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_library_module_parses_the_command_line() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "services" / "sgpo").rglob("*.py")
        if "cli" not in p.relative_to(ROOT / "services" / "sgpo").parts[:1]
        and ("import argparse" in p.read_text() or "from argparse" in p.read_text())
    ]
    assert offenders == []
