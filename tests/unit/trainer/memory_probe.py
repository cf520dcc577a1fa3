"""Measure one trainer step's peak resident memory in a fresh process (run by test_memory.py).

    python -m tests.unit.trainer.memory_probe SEQ_LEN COMPLETION_LEN '{"logprob_chunk_tokens": 128}'

A Qwen2-architecture model with a small hidden size and the real 151,936-token vocabulary; one sequence
per micro-batch. Prints JSON: the measured peak (resident bytes the engine added: weights and AdamW state
after a first step, plus the second step's high-water mark) and estimate_peak_memory's for the same shape.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

SHAPE: dict[str, Any] = dict(
    vocab_size=151_936,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
    pad_token_id=0,
    eos_token_id=2,
)


def main() -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sgpo.core import Completion, Group, Verdict
    from sgpo.trainer.config import TrainerConfig
    from sgpo.trainer.engine import TrainEngine
    from sgpo.trainer.memory import _status_bytes, estimate_peak_memory, peak_rss_above

    torch.set_num_threads(1)
    seq, completion = int(sys.argv[1]), int(sys.argv[2])
    knobs = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    cfg = Qwen2Config(**SHAPE)
    folder = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(folder)
    rng = random.Random(0)

    def group(i: int) -> Group:
        c = Completion(
            text="",
            token_ids=tuple(rng.randrange(3, cfg.vocab_size) for _ in range(completion)),
            logprobs=(-1.0,) * completion,
        )
        return Group(
            group_id=f"g{i}",
            problem="",
            prompt_text="",
            prompt_token_ids=tuple(rng.randrange(3, cfg.vocab_size) for _ in range(seq - completion)),
            answer="",
            completions=(c,),
            verdicts=(Verdict("wrong"),),
            rewards=(0.0,),
            advantages=(1.0,),
            kind="mixed",
        )

    gc.collect()
    base = _status_bytes("VmRSS")
    engine = TrainEngine(TrainerConfig(model_path=folder, micro_batch_size=1, max_seq_len=seq, **knobs))
    engine.load(folder)
    engine.train_step([group(0)], 0)  # AdamW's state exists from here on
    gc.collect()
    resident = _status_bytes("VmRSS") - base
    _, above = peak_rss_above(lambda: engine.train_step([group(1)], 1))
    est = estimate_peak_memory(
        cfg,
        seq,
        1,
        loss_tokens=completion,
        chunk_tokens=knobs.get("logprob_chunk_tokens", 0),
        gradient_checkpointing=knobs.get("gradient_checkpointing") == "on",
    )
    print(json.dumps({"measured": resident + above, "estimate": est.total, "parts": est.as_gib()}))


if __name__ == "__main__":
    main()
