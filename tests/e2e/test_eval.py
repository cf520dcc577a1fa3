"""`sgpo eval` through the real CLI with a tiny policy: every benchmark file in ../shared/data and the arith
split run end to end, and bad input is an exit status 2 with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from sgpo.cli import main
from sgpo.tasks.benchmarks import BENCHMARKS
from sgpo.tasks.tiny import TINY_PRESET
from tests.support import SHARED_DATA, sgpo_cmd

# A few SFT steps: the policy is near-random, but a real `sgpo pretrain` folder (pretrain.json included).
SMALL = replace(TINY_PRESET.with_iters(3), batch_size=8, eval_steps=(1,), eval_per_level=2)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sgpo.tasks.pretrain import pretrain

    out = tmp_path_factory.mktemp("policy") / "tiny"
    pretrain(SMALL, out, progress=False, threads=1)
    return out


@pytest.mark.e2e
def test_eval_runs_every_benchmark_with_the_tiny_policy(tiny_policy: Path, tmp_path: Path) -> None:
    out = tmp_path / "res" / "results.json"
    proc = subprocess.run(
        sgpo_cmd(
            "eval",
            "--model",
            str(tiny_policy),
            "--benchmarks",
            "all",
            "--limit",
            "2",
            "--k",
            "2",
            "--max-tokens",
            "24",
            "--threads",
            "1",
            "--verifier-workers",
            "1",
            "--data-dir",
            str(SHARED_DATA),
            "--out",
            str(out),
        ),
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in BENCHMARKS:
        assert name in proc.stdout
    assert "avg@2" in proc.stdout and "pass@2" in proc.stdout
    result = json.loads(out.read_text())
    assert result["prompt_style"] == "tiny"
    assert result["config"]["k"] == 2 and result["config"]["pass_k"] == [1, 2]
    assert result["config"]["max_tokens"] == 24 and result["machine"]["python"]
    assert list(result["results"]) == list(BENCHMARKS)
    levels = [str(s) for s in TINY_PRESET.eval_steps]
    for name, m in result["results"].items():
        assert m["problems"] == (2 * len(levels) if name == "arith" else 2), name
        assert m["samples"] == 2 * m["problems"]
        for key in ("avg@2", "pass@1", "pass@2", "unscorable_rate", "truncated_rate"):
            assert 0.0 <= m[key] <= 1.0, (name, key, m[key])
        assert m["pass@1"] == pytest.approx(m["avg@2"])
        assert m["pass@1"] <= m["pass@2"]
        assert isinstance(m["unscorable"], int) and isinstance(m["prompt_too_long"], int)
        assert m["seconds"] >= 0
    assert list(result["results"]["arith"]["by_level"]) == levels
    assert set(result["results"]["math500"]["by_level"]) <= {"1", "2", "3", "4", "5"}

    items_path = out.with_name("results.items.jsonl")
    assert result["items_file"] == items_path.name
    records = [json.loads(line) for line in items_path.read_text().splitlines()]
    assert len(records) == sum(m["problems"] for m in result["results"].values())
    for r in records:
        assert {"benchmark", "id", "gold", "extracted", "verdicts", "correct", "unscorable"} <= set(r)
        assert len(r["verdicts"]) == (0 if r["prompt_too_long"] else 2)
        assert set(r["verdicts"]) <= {"correct", "wrong", "unscorable"}
        assert r["correct"] == r["verdicts"].count("correct")
    assert {r["gold"] for r in records if r["benchmark"] == "amc23"} == {"27", "36"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no temp files left"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "{tmp}/nope"], "does not exist; give a local Hugging Face model folder"),
        (["--model", "{tmp}"], "no config.json"),
        (["--benchmarks", "math501"], "unknown benchmark(s) math501; choose from math500, gsm8k, aime24"),
        (["--k", "0"], "--k must be >= 1"),
        (["--temperature", "-0.5"], "--temperature must be >= 0"),
        (["--k", "4", "--pass-k", "1,8"], "--pass-k 8: pass@k needs 1 <= k <= --k=4"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--prompt-template", "Q: {question}"], "containing {problem}"),
        (["--engine", "vllm", "--device", "cpu"], "--engine vllm runs on GPUs"),
        (["--benchmarks", "gsm8k", "--data-dir", "{tmp}"], "gsm8k/test.jsonl, which does not exist"),
        (["--out", "{tmp}"], "is a folder"),
    ],
)
@pytest.mark.e2e
def test_bad_input_exits_2_and_writes_nothing(
    args: list[str], message: str, tiny_policy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "--model", str(tiny_policy), "--out", str(tmp_path / "r.json")]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_bad_model_exit_status_from_the_console(tmp_path: Path) -> None:
    proc = subprocess.run(
        sgpo_cmd("eval", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "r.json")),
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    assert list(tmp_path.iterdir()) == []
