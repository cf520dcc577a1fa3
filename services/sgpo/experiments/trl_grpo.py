"""The outside GRPO: TRL's `GRPOTrainer` on the tiny policy, set up as an `sgpo train` run of GRPO.

Shared by bench/vs_trl.py (wall-clock per step) and the tuned study (`sgpo experiment trl-run`, a run folder
scored like SGPO's). TRL is never imported at module level: it lives in its own environment (a venv that sees
the system packages; bench/vs_trl.py's docstring), run with that environment's python.

What is matched, from a run.toml-shaped document (an `sgpo train` run's, or the one `trl_run_doc` writes):
the prompts the orchestrator would stream (its dataset, its seeded shuffle, its order), formatted by
`sgpo.tasks.arith.format_prompt`; num_generations = group size; one optimizer step per batch_groups x G
completions, split into micro-batches of SGPO's trainer `micro_batch_size` (generation_batch_size = the whole
step, so one `generate` per step); max_completion_length, temperature, lr, weight decay, grad clipping, PPO clip
range, beta = 0 and token-mean loss ("dapo") as SGPO's run.toml; the reward is the project's `MathVerifier`
in-process (1 correct, 0 wrong, None unscorable, which TRL leaves out of the group statistics as SGPO masks it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SETUP = (
    "TRL is not importable from {exe}. Install it in a separate environment that sees the system packages\n"
    "(never into the global one), then run with that environment's python:\n"
    "    python -m venv --system-site-packages /tmp/trlenv\n"
    "    /tmp/trlenv/bin/pip install trl==1.16.0"
)


@dataclass(frozen=True)
class TrlShape:
    """The values TRL's run takes from SGPO's run.toml."""

    group_size: int
    batch_groups: int
    micro: int
    max_tokens: int
    temperature: float
    lr: float
    weight_decay: float
    max_grad_norm: float
    beta: float
    eps_low: float
    eps_high: float

    @property
    def seqs(self) -> int:
        return self.group_size * self.batch_groups


def trl_shape(cfg: dict[str, Any]) -> TrlShape:
    """From a run.toml document ([trainer], [orchestrator.sampling], [algo]); the trainer's and algorithm's
    defaults where a key is absent."""
    from sgpo.core import AlgoConfig
    from sgpo.trainer.config import TrainerConfig

    tr, orch, algo = cfg["trainer"], cfg["orchestrator"], cfg.get("algo", {})
    fields = TrainerConfig.model_fields
    adef = AlgoConfig.model_fields
    group_size, batch_groups = int(algo["group_size"]), int(tr["batch_groups"])
    seqs = group_size * batch_groups
    micro = min(int(tr.get("micro_batch_size", fields["micro_batch_size"].default)), seqs)
    while seqs % micro:  # whole micro-batches per optimizer step
        micro -= 1
    return TrlShape(
        group_size=group_size,
        batch_groups=batch_groups,
        micro=micro,
        max_tokens=int(orch["sampling"]["max_tokens"]),
        temperature=float(orch["sampling"]["temperature"]),
        lr=float(tr["lr"]),
        weight_decay=float(tr.get("weight_decay", fields["weight_decay"].default)),
        max_grad_norm=float(tr.get("max_grad_norm", fields["max_grad_norm"].default)),
        beta=float(algo.get("kl_coef", adef["kl_coef"].default)),
        eps_low=float(algo.get("clip_eps_low", adef["clip_eps_low"].default)),
        eps_high=float(algo.get("clip_eps_high", adef["clip_eps_high"].default)),
    )


def ordered_prompts(cfg: dict[str, Any], n: int) -> list[Any]:
    """The first n prompts the orchestrator of run.toml `cfg` streams: its dataset, seeded shuffle and order."""
    from sgpo.orchestrator.dataset import iterate_epochs, load_prompts

    orch = cfg["orchestrator"]
    stream = iterate_epochs(
        load_prompts(Path(orch["dataset"])), orch.get("epochs", 0), orch.get("shuffle", True), orch["seed"]
    )
    return [p for _, (_, p) in zip(range(n), stream, strict=False)]


def correctness_reward(verifier: Any) -> Callable[..., list[float | None]]:
    def correctness(completions: list[str], answer: list[str], **_: Any) -> list[float | None]:
        verdicts = verifier.verify_batch(list(zip(answer, completions, strict=True)))
        return [None if v.status == "unscorable" else float(v.status == "correct") for v in verdicts]

    return correctness


def grpo_config(shape: TrlShape, output_dir: Path, steps: int, seed: int, use_cpu: bool) -> Any:
    """TRL's GRPOConfig matching SGPO's run (see the module docstring)."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(output_dir),
        use_cpu=use_cpu,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,  # (gradient checkpointing) SGPO's trainer: off for the tiny policy
        per_device_train_batch_size=shape.micro,
        gradient_accumulation_steps=shape.seqs // shape.micro,  # one generation per optimizer step
        num_generations=shape.group_size,
        max_completion_length=shape.max_tokens,
        temperature=shape.temperature,
        top_p=1.0,
        top_k=0,
        learning_rate=shape.lr,
        lr_scheduler_type="constant",
        weight_decay=shape.weight_decay,
        max_grad_norm=shape.max_grad_norm,
        beta=shape.beta,
        epsilon=shape.eps_low,
        epsilon_high=shape.eps_high,
        loss_type="dapo",  # token mean over the step's tokens: SGPO's loss_agg = token_mean
        num_iterations=1,
        max_steps=steps,
        shuffle_dataset=False,  # the orchestrator's order, already shuffled
        seed=seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def build_trainer(
    cfg: dict[str, Any],
    policy: Path,
    steps: int,
    seed: int,
    output_dir: Path,
    use_cpu: bool,
    verifier: Any,
    callbacks: list[Any],
) -> tuple[Any, Any, TrlShape]:
    """(GRPOTrainer, its model, the shape) for run.toml `cfg`, on `policy`, fp32."""
    import warnings

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import GRPOTrainer

    from sgpo.tasks.arith import format_prompt

    shape = trl_shape(cfg)
    prompts = ordered_prompts(cfg, steps * shape.batch_groups)
    dataset = Dataset.from_list([{"prompt": format_prompt(p.problem), "answer": p.answer} for p in prompts])
    tok = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=correctness_reward(verifier),
        args=grpo_config(shape, output_dir, steps, seed, use_cpu),
        train_dataset=dataset,
        processing_class=tok,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # no log dict per step on stdout
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames inside TRL
    return trainer, model, shape


# ---------------------------------------------------------------- a TRL run as a study run folder


def trl_run_doc(
    run_dir: Path, policy: Path, seed: int, lr: float, levels: tuple[int, ...] | None, extra: dict[str, Any]
) -> dict[str, Any]:
    """run.toml of a TRL run folder: the tiny preset's shapes (what `sgpo train --preset tiny` writes), the
    study's extra config merged over them, `algo = "trl"`, the RL prompts of `sgpo train --seed seed`."""
    from sgpo.launch.presets import TRAIN_PRESETS
    from sgpo.launch.train import deep_merge

    preset = TRAIN_PRESETS["tiny"]
    doc: dict[str, Any] = {
        "algo": {"algo": "grpo", "group_size": preset.group_size},
        "trainer": {"batch_groups": preset.batch_groups, "lr": lr, "seed": seed},
        "orchestrator": {
            "seed": seed,
            "epochs": 0,
            "dataset": str(run_dir / "train_problems.jsonl"),
            "sampling": {"temperature": preset.temperature, "max_tokens": preset.max_tokens},
        },
    }
    keep = {k: extra[k] for k in ("algo", "trainer", "orchestrator") if k in extra}
    doc = deep_merge(doc, keep)
    doc["trainer"]["lr"] = lr
    doc["algo"]["algo"] = "trl"  # the study's name for it; GRPO's loss otherwise
    doc["trl"] = {"policy": str(policy), **({"levels": list(levels)} if levels else {})}
    return doc


def run_trl_study_run(
    run_dir: Path,
    policy: Path,
    *,
    seed: int,
    lr: float,
    steps: int,
    eval_every: int,
    eval_split: str,
    eval_samples: int,
    eval_temperature: float,
    device: str,
    levels: tuple[int, ...] | None = None,
    extra: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train TRL's GRPO in `run_dir` as `sgpo train` would lay it out: run.toml, train/eval_problems.jsonl of the
    same seed and split, checkpoints/step-N every `eval_every` steps and at the end, eval.jsonl (the held-out
    score of the initial policy and of each checkpoint, by `sgpo.experiments.score`), summary.json."""
    import tomli_w
    import torch
    from transformers import TrainerCallback

    from sgpo.experiments.score import score_model
    from sgpo.launch.presets import TRAIN_PRESETS
    from sgpo.launch.train import write_datasets
    from sgpo.verifier import MathVerifier, VerifierConfig

    run_dir.mkdir(parents=True, exist_ok=True)
    preset = TRAIN_PRESETS["tiny"]
    write_datasets(run_dir, seed, preset, levels, eval_split)
    cfg = trl_run_doc(run_dir, policy, seed, lr, levels, extra or {})
    (run_dir / "run.toml").write_text(tomli_w.dumps(cfg))
    use_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    saved: list[tuple[int, Path]] = []

    class Saver(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            self.ends.append(time.time())
            step = int(state.global_step)
            if model is not None and (step % eval_every == 0 or step == steps):
                path = run_dir / "checkpoints" / f"step-{step}"
                model.save_pretrained(path)
                tok = kw.get("processing_class")
                if tok is not None:
                    tok.save_pretrained(path)
                (path / "trainer_state.json").write_text(json.dumps({"step": step, "trl": True}))
                saved.append((step, path))

    verifier = MathVerifier(VerifierConfig(workers=int(cfg.get("verifier", {}).get("workers", 2))))
    verifier.wait_ready()
    saver = Saver()
    t0 = time.time()
    try:
        trainer, model, shape = build_trainer(
            cfg, policy, steps, seed, run_dir / "trl", use_cpu, verifier, [saver]
        )
        log(
            f"[trl] GRPOTrainer: {shape.batch_groups} prompts x {shape.group_size} per step, lr {shape.lr:g}, "
            f"{steps} steps on {trainer.accelerator.device}"
        )
        trainer.train()
    finally:
        verifier.close()
    train_s = time.time() - t0
    if not saved or saved[-1][0] != steps:  # the callback's model kwarg missing: save the end state
        path = run_dir / "checkpoints" / f"step-{steps}"
        trainer.save_model(str(path))
        (path / "trainer_state.json").write_text(json.dumps({"step": steps, "trl": True}))
        saved.append((steps, path))
    del trainer, model
    device_eval = "cpu" if use_cpu else "cuda"
    evals = []
    with (run_dir / "eval.jsonl").open("w") as f:
        for step, model_path in [(0, policy), *saved]:
            rec = score_model(
                model_path,
                run_dir / "eval_problems.jsonl",
                run_dir / "scores" / f"step-{step}.json",
                k=eval_samples,
                temperature=eval_temperature,
                max_tokens=shape.max_tokens,
                device=device_eval,
            )
            rec.update(step=step, sampled=step * shape.seqs, split=eval_split)
            evals.append(rec)
            f.write(json.dumps(rec) + "\n")
            log(f"[trl] eval @ step {step}: overall {rec['overall']:.3f}")
    summary = {
        "interrupted": False,
        "steps": steps,
        "sampled": steps * shape.seqs,
        "eval": evals,
        "eval_split": eval_split,
        "train_seconds": train_s,
        "step_end_unix": saver.ends,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
