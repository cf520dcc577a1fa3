"""Train with TRL's GRPOTrainer on SGPO's colored rewards (docs/integrations.md#trl): a complete script.

Needs a judge with group scoring (`sgpo serve verifier`; `sgpo serve judge` with
SGPO_JUDGE__SCORING__VERIFIER=<verifier host:port> and an API key) and TRL in the training environment:

    python -m venv --system-site-packages /tmp/trlenv && /tmp/trlenv/bin/pip install trl==1.16.0
    /tmp/trlenv/bin/python examples/trl_colored_reward.py --judge http://127.0.0.1:8081 --api-key KEY \
        --model ~/.cache/sgpo/policies/tiny-754f7674f77e --steps 20

The dataset is a JSONL file with `problem` and `answer` (and optionally `solution`, the reference the judge
may use), as `sgpo data` writes them; without `--dataset`, the synthetic arithmetic task the tiny policy was
pretrained on (`--arith-steps`). `--report` writes TRL's log history and what ColoredReward scored per step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def load_rows(args: argparse.Namespace) -> list[dict[str, str]]:
    if args.dataset:
        rows = [json.loads(line) for line in Path(args.dataset).read_text().splitlines() if line.strip()]
        return [
            {"problem": r["problem"], "answer": str(r["answer"]), "reference_solution": r.get("solution", "")}
            for r in rows
        ]
    from sgpo.tasks.arith import ArithSpec, generate_split

    levels = [int(s) for s in args.arith_steps.split(",")]
    spec = ArithSpec(start_max=9)  # the tiny preset's task
    problems = generate_split("train", levels, args.prompts_per_level, seed=args.seed, spec=spec)
    return [{"problem": p.problem, "answer": p.answer, "reference_solution": p.solution} for p in problems]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--judge", required=True, help="the judge's HTTP root, e.g. http://127.0.0.1:8081")
    p.add_argument("--api-key", default=None, help="one of the judge's api_keys")
    p.add_argument("--model", required=True, help="policy folder or hub id")
    p.add_argument(
        "--dataset", help="JSONL with problem, answer (and solution); default: the arithmetic task"
    )
    p.add_argument("--arith-steps", default="4,5,6", help="difficulty levels of the arithmetic task")
    p.add_argument("--prompts-per-level", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps")
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--max-completion-length", type=int, default=160)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="/tmp/trl-sgpo")
    p.add_argument("--report", type=Path, help="write the log history and per-step scoring here (JSON)")
    args = p.parse_args()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from sgpo.integrations.trl import ColoredReward

    rows = load_rows(args)
    # The prompt is what the policy sees; `problem`, `answer`, `reference_solution` reach the reward as columns.
    dataset = Dataset.from_list([{"prompt": f"{r['problem']}\n", **r} for r in rows])
    seqs = args.prompts_per_step * args.num_generations
    config = GRPOConfig(
        output_dir=args.output_dir,
        use_cpu=not torch.cuda.is_available(),
        per_device_train_batch_size=seqs,  # one generation and one optimizer step per step: whole groups
        gradient_accumulation_steps=1,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        temperature=1.0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=0.0,
        loss_type="dapo",
        max_steps=args.steps,
        seed=args.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    reward = ColoredReward(url=args.judge, api_key=args.api_key, num_generations=args.num_generations)
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32),
        reward_funcs=[reward],
        args=config,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(args.model),
    )
    trainer.train()

    history: list[dict[str, Any]] = [dict(h) for h in trainer.state.log_history]
    steps = [h for h in history if "reward" in h]
    for h in steps:
        print(
            f"step {h['step']}: reward {h['reward']:.3f} (before coloring {h['sgpo/reward_before_coloring']:.3f}), "
            f"all-negative groups {h['sgpo/all_negative_frac']:.0%}, colored {h['sgpo/colored_frac']:.0%}, "
            f"uncolorable {h['sgpo/uncolorable_groups']:.0f}, colored reward mean {h['sgpo/colored_reward_mean']:.3f}"
        )
    if args.report:
        args.report.write_text(
            json.dumps(
                {
                    "log_history": history,
                    "scored": [{**vars(s), "metrics": s.metrics()} for s in reward.history],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
