"""sgpo.core and the CLI's help must not pull in heavy libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "vllm", "sympy", "grpc", "redis")


def test_core_imports_without_heavy_libraries() -> None:
    code = f"import sys, sgpo.core; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_help_does_not_import_torch() -> None:
    code = (
        "import sys; from sgpo.cli import build_parser; build_parser();"
        "print(','.join(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_command_has_working_help(capsys: pytest.CaptureFixture[str]) -> None:
    from sgpo.cli import COMMANDS, build_parser

    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            parser.parse_args([name, "--help"])
        assert e.value.code == 0
        assert f"usage: sgpo {name}" in capsys.readouterr().out
