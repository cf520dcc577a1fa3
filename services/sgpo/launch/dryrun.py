"""`sgpo train --dry-run`: resolve a run without starting it, and say what each trainer GPU will need.

The recipe, the layout and the policy are resolved exactly as `sgpo train` does; the run config is built (on
placeholder ports) and every service's config is validated, so a bad value fails here in a second. Then the
trainer's memory per device is estimated by `sgpo.trainer.memory.estimate_peak_memory` from the policy's
config.json and the trainer's resolved settings: the longest sequence (`max_seq_len`), the micro-batch (by
count or by `max_tokens_per_micro_batch`), precision and gradient checkpointing as the trainer resolves "auto"
on the layout's devices, one FSDP shard per trainer process. Nothing is loaded, nothing is written.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgpo.launch.train import (
    RecipeError,
    TrainOptions,
    build_run_config,
    describe_layout,
    resolve_layout,
    resolve_policy,
    resolve_recipe,
    validate_configs,
)


@dataclass(frozen=True)
class DryRun:
    """What a run would be: its layout, the trainer step it sizes for, and the memory estimate per device."""

    recipe: str
    policy: Path
    layout: str
    params: int
    seq_len: int
    micro_batch: int
    completion_tokens: int
    dtype: str
    gradient_checkpointing: bool
    world: int
    estimate_gib: dict[str, float]


def plan_run(opts: TrainOptions) -> DryRun:
    """Resolve `opts` as `sgpo train` would and estimate the trainer's peak memory per device. Raises
    RecipeError, ValueError or OSError (a bad recipe, layout, policy or service config) with what to fix."""
    import tomli_w

    from sgpo.common.services import SERVICES
    from sgpo.common.settings import load_config
    from sgpo.trainer.config import TrainerConfig
    from sgpo.trainer.memory import count_parameters, estimate_peak_memory

    recipe = resolve_recipe(opts)
    layout = resolve_layout(recipe, opts)
    policy = resolve_policy(opts.policy or recipe.spec.policy)
    preset = recipe.preset
    names = ["verifier", "judge", *layout.generator_names, "trainer", "orchestrator", "judge-llm"]
    ports: dict[str, tuple[int, int]] = {n: (50000 + 3 * i, 50001 + 3 * i) for i, n in enumerate(names)}
    with tempfile.TemporaryDirectory(prefix="sgpo-dry-run-") as tmp:
        run_dir = Path(tmp)
        doc = build_run_config(
            preset,
            opts,
            run_dir,
            policy,
            "redis://127.0.0.1:6379/0",
            run_dir / "train_problems.jsonl",
            ports,
            opts.steps or preset.steps,
            recipe,
            layout,
        )
        doc.pop("tracking", None)
        path = run_dir / "run.toml"
        path.write_text(tomli_w.dumps(doc))
        validate_configs(path)
        cfg = load_config(TrainerConfig, path, known_sections=set(SERVICES))
    on_gpu = bool(layout.trainer_gpus) or cfg.device == "cuda"
    model_cfg: dict[str, Any] = json.loads((policy / "config.json").read_text())
    seq_len = cfg.max_seq_len
    if cfg.max_tokens_per_micro_batch:
        micro = max(1, cfg.max_tokens_per_micro_batch // seq_len)
    else:
        micro = cfg.micro_batch_size
    dtype = "bf16" if cfg.precision == "bf16" or (cfg.precision == "auto" and on_gpu) else "fp32"
    ckpt = cfg.gradient_checkpointing == "on" or (cfg.gradient_checkpointing == "auto" and on_gpu)
    completion = min(preset.max_tokens, seq_len - 1)
    est = estimate_peak_memory(
        model_cfg,
        seq_len,
        micro,
        dtype=dtype,
        chunk_tokens=cfg.logprob_chunk_tokens,
        world=layout.trainer_procs,
        gradient_checkpointing=ckpt,
        loss_tokens=completion,
    )
    return DryRun(
        recipe=str(recipe.path or recipe.spec.name),
        policy=policy,
        layout=describe_layout(layout),
        params=count_parameters(model_cfg)[0],
        seq_len=seq_len,
        micro_batch=micro,
        completion_tokens=completion,
        dtype=dtype,
        gradient_checkpointing=ckpt,
        world=layout.trainer_procs,
        estimate_gib=est.as_gib(),
    )


def dry_run(opts: TrainOptions) -> int:
    """Print plan_run's answer; exit status 0, or 2 with the error."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    try:
        plan = plan_run(opts)
    except (RecipeError, ValueError, OSError) as e:
        console.print(f"[red]error:[/] {escape(str(e))}")
        return 2
    size = f"{plan.params / 1e9:.2f}B" if plan.params >= 1e8 else f"{plan.params / 1e6:.2f}M"
    console.print(f"recipe {escape(plan.recipe)} · policy {escape(str(plan.policy))} ({size} parameters)")
    console.print(plan.layout)
    console.print(
        f"trainer step sized for micro-batches of {plan.micro_batch} x {plan.seq_len} tokens "
        f"({plan.completion_tokens} completion tokens each), {plan.dtype}, gradient checkpointing "
        f"{'on' if plan.gradient_checkpointing else 'off'}, {'FSDP over ' + str(plan.world) + ' processes' if plan.world > 1 else 'one process'}"
    )
    table = Table(title="estimated peak memory per trainer device (GiB; sgpo.trainer.memory)")
    for name in plan.estimate_gib:
        table.add_column(name, justify="right")
    table.add_row(*(f"{v:.1f}" for v in plan.estimate_gib.values()))
    console.print(table)
    console.print("every service's config resolved; nothing was started (drop --dry-run to train)")
    return 0
