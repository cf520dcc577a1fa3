"""Test helpers for the queue and trainer tests: synthetic scored groups and the tiny policy on disk."""

from __future__ import annotations

import random
import struct
from pathlib import Path

from sgpo.core import Completion, Group, GroupKind, Verdict

# Token ids of the tiny policy's character vocabulary (ids 0..3 are pad/bos/eos/unk).
FIRST_CHAR_ID, TINY_VOCAB = 4, 100


def _f32(x: float) -> float:
    """Logprobs travel as float32 on the wire; keep test values exactly representable."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def make_group(
    group_id: str,
    *,
    seed: int = 0,
    size: int = 4,
    prompt_len: int = 6,
    completion_len: tuple[int, int] = (3, 10),
    advantages: tuple[float, ...] | None = None,
    rewards: tuple[float, ...] | None = None,
    kind: GroupKind | None = None,
    colored: bool = False,
    policy_version: int = 0,
    vocab: int = TINY_VOCAB,
) -> Group:
    """A scored group of `size` completions with random tokens and behaviour logprobs in [-3, -0.05]."""
    rng = random.Random(f"{group_id}/{seed}")
    if rewards is None:
        rewards = tuple(float(rng.random() < 0.4) for _ in range(size))
    if advantages is None:
        mean = sum(rewards) / size
        std = (sum((r - mean) ** 2 for r in rewards) / (size - 1)) ** 0.5
        advantages = tuple((r - mean) / (std + 1e-6) for r in rewards)
    completions = []
    for _ in range(size):
        n = rng.randint(*completion_len)
        completions.append(
            Completion(
                text="x" * n,
                token_ids=tuple(rng.randrange(FIRST_CHAR_ID, vocab) for _ in range(n)),
                logprobs=tuple(_f32(-rng.uniform(0.05, 3.0)) for _ in range(n)),
                policy_version=policy_version,
            )
        )
    if kind is None:
        kind = "all_negative" if max(rewards) < 1.0 else "all_positive" if min(rewards) == 1.0 else "mixed"
    return Group(
        group_id=group_id,
        problem=f"problem {group_id}",
        prompt_text=f"problem {group_id}",
        prompt_token_ids=(1, *(rng.randrange(FIRST_CHAR_ID, vocab) for _ in range(prompt_len - 1))),
        answer="42",
        completions=tuple(completions),
        verdicts=tuple(Verdict("correct" if r == 1.0 else "wrong") for r in rewards),
        rewards=tuple(rewards),
        advantages=tuple(advantages),
        kind=kind,
        colored=colored,
        policy_version=policy_version,
    )


def tiny_policy(out_dir: Path, seed: int = 0) -> Path:
    """The project's random-init tiny Llama + character tokenizer (HF format) in `out_dir`."""
    from sgpo.tasks.tiny import build_tiny_policy

    if not (out_dir / "config.json").is_file():
        build_tiny_policy(out_dir, seed)
    return out_dir


def trainer_env(policy: Path, run_dir: Path, run_id: str, redis_url: str, **fields: object) -> dict[str, str]:
    """Environment for `sgpo serve trainer` (SGPO_TRAINER__* overrides), tuned for quick tests."""
    env = {
        "SGPO_TRAINER__MODEL_PATH": str(policy),
        "SGPO_TRAINER__RUN_DIR": str(run_dir),
        "SGPO_TRAINER__RUN_ID": run_id,
        "SGPO_TRAINER__REDIS_URL": redis_url,
        "SGPO_TRAINER__CONSUMER": "trainer-0",
        "SGPO_TRAINER__TORCH_THREADS": "1",
        "SGPO_TRAINER__READ_BLOCK_MS": "100",
        "SGPO_TRAINER__LR": "0.001",
    }
    env.update({f"SGPO_TRAINER__{k.upper()}": str(v) for k, v in fields.items()})
    return env


def read_metrics(run_dir: Path) -> list[dict[str, object]]:
    import json

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def final_consumed(run_dir: Path) -> list[list[str]]:
    """Group ids per step in the newest checkpoint."""
    from sgpo.trainer.checkpoint import latest_checkpoint, load_state

    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None, f"no checkpoint under {run_dir}"
    return load_state(ckpt).consumed
