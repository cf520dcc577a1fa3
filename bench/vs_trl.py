"""Wall-clock per RL step: `sgpo train --algo grpo` against TRL's `GRPOTrainer`, same policy and shapes, CPU.

TRL is installed only in the benchmark's own environment (a venv that sees the system packages, so that it
uses the project's torch and the editable `sgpo`); never into the global one:

    python -m venv --system-site-packages /tmp/trlenv
    /tmp/trlenv/bin/pip install trl==1.16.0      # pulls accelerate, datasets (and may pull a CUDA torch:)
    /tmp/trlenv/bin/pip install torch==2.13.0    # back to the project's CPU build
    /tmp/trlenv/bin/pip install -e .             # sgpo and its dependencies into the same venv
    /tmp/trlenv/bin/python bench/vs_trl.py          # preset shapes (16 prompts x 8, 160 tokens), 20 steps
    /tmp/trlenv/bin/python bench/vs_trl.py --steps 3 --batch-groups 2 --group-size 4 --max-tokens 32   # smoke

Three runs, one after the other, in this process:
1. `sgpo train --preset tiny --algo grpo` (every service a local process, embedded Redis), given the policy
   folder; a `--config` TOML sets the shapes when they differ from the preset's.
2. TRL `GRPOTrainer` in this process on the same policy folder (fp32, CPU, no vLLM): the prompts the
   orchestrator streamed, in its order (same dataset, same seeded shuffle), formatted by
   `sgpo.tasks.arith.format_prompt`; num_generations = group size; one optimizer step per
   batch_groups x G completions, split into micro-batches of SGPO's trainer `micro_batch_size`
   (generation_batch_size = the whole step, so one `generate` per step, as TRL does by default);
   max_completion_length, temperature, lr, clip, beta = 0 and token-mean loss ("dapo") as SGPO's run.toml;
   the reward is the project's `MathVerifier` in-process (1 correct, 0 wrong, None unscorable).
3. `sgpo train --algo sgpo` (the default algorithm) for the judge's share of the time.

Per-step wall-clock, both sides: the intervals between consecutive optimizer steps (SGPO: `time_unix` in
metrics.jsonl; TRL: a callback's clock at `on_step_end`), so the first step (start-up, model load, first
generation) is excluded; median and mean are printed. SGPO's trainer skips the forward/backward of
zero-advantage completions (most of an early GRPO batch: all-negative groups); TRL computes them. The
fraction SGPO trained is printed; `--no-skip` turns the skip off for a like-for-like loss computation.
The SGPO runs also evaluate held-out accuracy before the first and after the last step (not timed here).

Judging share (run 3): groups.jsonl has per group its share of its chunk's generate and verify seconds (one
Generate request per chunk of prompts) and, per judged group, the seconds of its Judge call (calls are
sequential within a chunk). Printed: judge / (generate + verify + judge) over all groups (the rollout path);
the judge seconds between the first and the last step over that wall-clock (what judging would cost if
nothing overlapped it: rollout runs beside training, so the trainer's busy share is printed too); and the
step time of sgpo over grpo (confounded: colored groups have non-zero advantages, so the trainer does more).

Machine, load and date are printed; on a shared CPU the figures are noisy; compare ratios within a run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def intervals(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def describe(xs: list[float]) -> str:
    if not xs:
        return "n/a (need >= 2 steps)"
    return f"median {statistics.median(xs):.3f} s  mean {statistics.fmean(xs):.3f} s  (n={len(xs)})"


def override_toml(args: argparse.Namespace) -> str:
    """A `sgpo train --config` TOML with the shapes given on the command line (empty: the preset's)."""
    lines: list[str] = []
    if args.group_size is not None:
        lines += ["[algo]", f"group_size = {args.group_size}"]
    trainer, orch = [], []
    if args.batch_groups is not None:
        b = args.batch_groups
        trainer.append(f"batch_groups = {b}")
        orch += [f"batch_groups = {b}", f"prompts_per_request = {b}", f"high_water = {4 * b}"]
    if args.no_skip:
        trainer.append("skip_zero_advantage = false")
    if trainer:
        lines += ["[trainer]", *trainer]
    if orch:
        lines += ["[orchestrator]", *orch]
    if args.max_tokens is not None:
        lines += ["[orchestrator.sampling]", f"max_tokens = {args.max_tokens}"]
    return "\n".join(lines) + "\n"


def run_sgpo(algo: str, args: argparse.Namespace, policy: Path, root: Path) -> dict[str, Any]:
    """`sgpo train` as a user runs it; returns the run folder's figures."""
    import tomllib

    run_dir = root / f"sgpo-{algo}"
    config = root / "overrides.toml"
    config.write_text(override_toml(args))
    cmd = [
        sys.executable,
        "-m",
        "sgpo.cli",
        "train",
        "--preset",
        "tiny",
        "--algo",
        algo,
        "--steps",
        str(args.steps),
        "--seed",
        str(args.seed),
        "--eval-every",
        str(10**9),  # no evaluation between steps: only before the first and after the last
        "--policy",
        str(policy),
        "--run-dir",
        str(run_dir),
        "--config",
        str(config),
    ]
    print(f"[{algo}] {' '.join(cmd[2:])}  (log: {root / f'sgpo-{algo}.log'})", flush=True)
    t0 = time.perf_counter()
    with (root / f"sgpo-{algo}.log").open("wb") as log:
        code = subprocess.call(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "120"}
        )
    total = time.perf_counter() - t0
    if code != 0:
        tail = (root / f"sgpo-{algo}.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"sgpo train --algo {algo} exited with {code}:\n{tail}")
    steps = read_jsonl(run_dir / "metrics.jsonl")
    # a step logged twice (trainer restarted before its checkpoint) counts once
    steps = sorted({s["step"]: s for s in steps}.values(), key=lambda s: s["step"])
    return {
        "run_dir": run_dir,
        "config": tomllib.loads((run_dir / "run.toml").read_text()),
        "steps": steps,
        "groups": read_jsonl(run_dir / "groups.jsonl"),
        "step_s": intervals([s["time_unix"] for s in steps]),
        "total_s": total,
    }


def sgpo_line(name: str, r: dict[str, Any]) -> str:
    if not r["step_s"]:
        return f"{name}: fewer than 2 steps logged; see {r['run_dir']}"
    steps = r["steps"][1:]  # the timed ones
    seqs = sum(s["seqs"] for s in steps)
    trained = sum(s["trained_seqs"] for s in steps)
    length = statistics.fmean(s["completion_len_mean"] for s in steps)
    compute = statistics.fmean(s["seconds"] for s in steps)
    neg = statistics.fmean(s["frac_all_negative"] for s in steps)
    return (
        f"{name}: per step {describe(r['step_s'])} | completion length {length:.1f} | "
        f"trained {trained}/{seqs} seqs ({trained / max(seqs, 1):.0%}; all-negative groups {neg:.0%}) | "
        f"trainer compute {compute:.3f} s/step ({compute / statistics.median(r['step_s']):.0%} of a step) | "
        f"whole command {r['total_s']:.0f} s"
    )


def run_trl(args: argparse.Namespace, policy: Path, sgpo: dict[str, Any], root: Path) -> dict[str, Any]:
    """TRL's GRPOTrainer on the grpo run's settings and prompts (`sgpo.experiments.trl_grpo`), on the CPU."""
    import torch
    from transformers import TrainerCallback

    from sgpo.experiments.trl_grpo import build_trainer
    from sgpo.verifier import MathVerifier, VerifierConfig

    cfg = sgpo["config"]
    if args.trl_threads:
        torch.set_num_threads(args.trl_threads)
    verifier = MathVerifier(VerifierConfig(workers=int(cfg.get("verifier", {}).get("workers", 2))))
    verifier.wait_ready()

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.logs: list[dict[str, float]] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.ends.append(time.perf_counter())

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs:
                self.logs.append(dict(logs))

    clock = Clock()
    trainer, model, shape = build_trainer(
        cfg, policy, args.steps, args.seed, root / "trl", use_cpu=True, verifier=verifier, callbacks=[clock]
    )
    print(
        f"[trl] GRPOTrainer: {shape.batch_groups} prompts x {shape.group_size} = {shape.seqs} completions per step "
        f"in {shape.seqs // shape.micro} micro-batches of {shape.micro}, max_completion_length {shape.max_tokens}, "
        f"torch threads {torch.get_num_threads()}, {trainer.accelerator.device} {next(model.parameters()).dtype}",
        flush=True,
    )
    t0 = time.perf_counter()
    try:
        trainer.train()
    finally:
        verifier.close()
    total = time.perf_counter() - t0
    step_logs = [lg for lg in clock.logs if "completions/mean_length" in lg]
    timed = step_logs[1:] or step_logs
    return {
        "step_s": intervals(clock.ends),
        "length": statistics.fmean(lg["completions/mean_length"] for lg in timed) if timed else float("nan"),
        "reward": statistics.fmean(lg.get("reward", float("nan")) for lg in timed) if timed else float("nan"),
        "total_s": total,
        "threads": torch.get_num_threads(),
    }


def judge_share(r: dict[str, Any]) -> list[str]:
    """From groups.jsonl of an sgpo run (`sgpo.experiments.stats.judging_share`): each row holds its group's share
    of its chunk's generate and verify calls (a chunk is one Generate request) and its own Judge call's seconds."""
    from sgpo.experiments.stats import judging_share

    s = judging_share(r["groups"], [st["time_unix"] for st in r["steps"]])
    share = s["rollout_share"]
    out = [
        f"judging (sgpo run): {s['judged']} of {s['groups']} groups judged, {s['colored']} colored; judge call "
        f"{s['judge_s'] / max(s['judged'], 1) * 1000:.1f} ms mean per judged group",
        f"  rollout path (generate + verify + judge): generate {s['generate_s']:.2f} s, verify {s['verify_s']:.2f} s, "
        f"judge {s['judge_s']:.2f} s -> judge share {share if share is not None else float('nan'):.1%}",
    ]
    steps = r["steps"]
    if s["wall_share"] is not None:
        lo, hi = steps[0]["time_unix"], steps[-1]["time_unix"]
        out.append(
            f"  wall-clock from step 1 to step {steps[-1]['step']} ({hi - lo:.1f} s): judge calls "
            f"{s['wall_share'] * (hi - lo):.2f} s = {s['wall_share']:.1%} of it (rollout overlaps training: judging "
            f"costs wall-clock only while the trainer waits for groups)"
        )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per run (timed: all but the first)")
    p.add_argument("--policy", type=Path, help="policy folder (default: the tiny preset's pretrained policy)")
    p.add_argument("--group-size", type=int, help="completions per prompt (default: the preset's)")
    p.add_argument("--batch-groups", type=int, help="prompts per step (default: the preset's)")
    p.add_argument("--max-tokens", type=int, help="longest completion (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trl-threads", type=int, default=0, help="torch threads for TRL (0: torch's default)")
    p.add_argument("--no-skip", action="store_true", help="SGPO trainer: no skipping of zero-advantage seqs")
    p.add_argument("--no-judge-run", action="store_true", help="skip run 3 (the sgpo algorithm)")
    p.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder)")
    args = p.parse_args()
    if args.steps < 2:
        p.error("--steps must be >= 2 (the first step is not timed)")
    if importlib.util.find_spec("trl") is None:
        from sgpo.experiments.trl_grpo import SETUP

        print(
            SETUP.format(exe=sys.executable) + "\n    /tmp/trlenv/bin/python bench/vs_trl.py", file=sys.stderr
        )
        return 2

    import torch
    import transformers
    import trl

    from sgpo.launch.presets import TRAIN_PRESETS

    preset = TRAIN_PRESETS["tiny"]
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}  host {platform.node()}")
    print(
        f"machine {platform.machine()} {platform.processor() or ''} cpus {os.cpu_count()} "
        f"torch {torch.__version__} transformers {transformers.__version__} trl {trl.__version__} "
        f"python {platform.python_version()}"
    )
    print(f"load average before {os.getloadavg()}")
    if args.policy is None:
        from sgpo.tasks.tiny import ensure_tiny_policy

        policy = ensure_tiny_policy(progress=True).resolve()
    else:
        policy = args.policy.resolve()
    print(
        f"policy {policy} | {args.batch_groups or preset.batch_groups} prompts x "
        f"{args.group_size or preset.group_size} completions per step, max tokens "
        f"{args.max_tokens or preset.max_tokens}, temperature {preset.temperature}, {args.steps} steps"
        f"{', SGPO zero-advantage skip off' if args.no_skip else ''}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="vs_trl-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        grpo = run_sgpo("grpo", args, policy, root)
        print(sgpo_line("sgpo train --algo grpo", grpo), flush=True)
        print(f"load average {os.getloadavg()}", flush=True)
        trl_r = run_trl(args, policy, grpo, root)
        print(
            f"trl GRPOTrainer: per step {describe(trl_r['step_s'])} | completion length {trl_r['length']:.1f} | "
            f"reward {trl_r['reward']:.3f} | train() {trl_r['total_s']:.0f} s",
            flush=True,
        )
        print(f"load average {os.getloadavg()}", flush=True)
        sgpo = None if args.no_judge_run else run_sgpo("sgpo", args, policy, root)
        if sgpo is not None:
            print(sgpo_line("sgpo train --algo sgpo", sgpo), flush=True)
        if grpo["step_s"] and trl_r["step_s"]:
            ours, theirs = statistics.median(grpo["step_s"]), statistics.median(trl_r["step_s"])
            print(
                f"median s/step: sgpo (grpo) {ours:.3f}, TRL {theirs:.3f} -> TRL / SGPO = {theirs / ours:.2f}x "
                f"(SGPO is {theirs / ours:.2f}x as fast)"
            )
        if sgpo is not None:
            for line in judge_share(sgpo):
                print(line)
            if grpo["step_s"] and sgpo["step_s"]:
                a, b = statistics.median(grpo["step_s"]), statistics.median(sgpo["step_s"])
                print(f"  median s/step sgpo / grpo = {b / a:.2f} (includes training the colored groups)")
        print(f"load average after {os.getloadavg()}")
        if args.keep:
            print(f"run folders kept in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
