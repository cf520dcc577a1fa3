"""The pretrained tiny policy ships with the package: checked by sha256, copied into the cache, reproducible."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from sgpo.tasks import tiny
from sgpo.tasks.tiny import (
    SHIPPED_POLICIES,
    SHIPPED_ROOT,
    TINY_PRESET,
    ShippedPolicyError,
    ensure_tiny_policy,
    file_sha256,
    policy_dir,
    shipped_policy,
)


def test_the_package_ships_the_current_tiny_preset() -> None:
    name = f"tiny-{TINY_PRESET.digest()}"
    assert name in SHIPPED_POLICIES, (
        "TINY_PRESET changed: run `sgpo pretrain --preset tiny`, copy the cache folder to "
        f"{SHIPPED_ROOT}/{name} and record its model.safetensors sha256 in SHIPPED_POLICIES"
    )
    folder = shipped_policy(TINY_PRESET)
    assert folder == SHIPPED_ROOT / name
    assert file_sha256(folder / "model.safetensors") == SHIPPED_POLICIES[name]
    record = json.loads((folder / "pretrain.json").read_text())
    assert record["digest"] == TINY_PRESET.digest()
    assert set(record["accuracy"]) == {str(s) for s in TINY_PRESET.eval_steps}


def test_first_use_copies_the_shipped_policy_instead_of_pretraining(tmp_path: Path) -> None:
    t0 = time.monotonic()
    folder = ensure_tiny_policy(tmp_path, progress=False)
    assert time.monotonic() - t0 < 30, "copying 3 MB, not pretraining"
    assert folder == policy_dir(TINY_PRESET, tmp_path)
    assert file_sha256(folder / "model.safetensors") == SHIPPED_POLICIES[f"tiny-{TINY_PRESET.digest()}"]
    assert not [p for p in folder.parent.iterdir() if p.is_dir() and p.name.startswith(".")], (
        "no work folders left"
    )

    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoTokenizer.from_pretrained(folder)
    AutoModelForCausalLM.from_pretrained(folder)


def test_a_damaged_shipped_policy_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"tiny-{TINY_PRESET.digest()}"
    damaged = tmp_path / "shipped"
    shutil.copytree(SHIPPED_ROOT / name, damaged / name)
    weights = damaged / name / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(tiny, "SHIPPED_ROOT", damaged)
    with pytest.raises(ShippedPolicyError, match=r"sgpo pretrain --preset tiny") as err:
        ensure_tiny_policy(tmp_path / "cache", progress=False)
    assert "sha256" in str(err.value)
    assert not policy_dir(TINY_PRESET, tmp_path / "cache").exists()


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)  # past the suite's 600 s default
def test_pretraining_reproduces_the_shipped_weights(tmp_path: Path) -> None:
    """`sgpo pretrain --preset tiny --force` on CPU writes bit-identical weights (6-30 minutes)."""
    from sgpo.tasks.pretrain import pretrain

    record = json.loads((SHIPPED_ROOT / f"tiny-{TINY_PRESET.digest()}" / "pretrain.json").read_text())
    pretrain(TINY_PRESET, tmp_path / "tiny", progress=False, threads=record["threads"])
    got = file_sha256(tmp_path / "tiny" / "model.safetensors")
    assert got == SHIPPED_POLICIES[f"tiny-{TINY_PRESET.digest()}"]


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
def test_sgpo_pretrain_reproduces_the_shipped_policy_and_its_accuracy_table(tmp_path: Path) -> None:
    """The README's way to remake the shipped policy, `sgpo pretrain --preset tiny --out DIR`, as a user runs
    it: the same weights (sha256, and the command says so) and the same accuracy table (greedy and sampled, by
    number of steps) as the shipped pretrain.json. 16 CPU-minutes on 2 threads (29 minutes of wall time on the
    loaded 2-core VM the shipped folder was made on)."""
    import subprocess

    from tests.support import sgpo_cmd

    name = f"tiny-{TINY_PRESET.digest()}"
    record = json.loads((SHIPPED_ROOT / name / "pretrain.json").read_text())
    out = tmp_path / "tiny"
    threads = str(record["threads"])
    proc = subprocess.run(
        sgpo_cmd("pretrain", "--preset", "tiny", "--out", str(out), "--threads", threads, "--no-progress"),
        capture_output=True,
        text=True,
        timeout=3 * 3600 - 60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"the same as the shipped policy's ({SHIPPED_POLICIES[name]})" in proc.stdout, proc.stdout[-2000:]
    assert file_sha256(out / "model.safetensors") == SHIPPED_POLICIES[name]
    made = json.loads((out / "pretrain.json").read_text())
    assert made["digest"] == record["digest"] == TINY_PRESET.digest()
    assert made["accuracy"] == record["accuracy"]
    assert made["sampled_accuracy"] == record["sampled_accuracy"]
