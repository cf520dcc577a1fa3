"""`sgpo pretrain --preset tiny|tiny-chat`: supervised fine-tuning of a tiny policy on easy arithmetic chains.

The tiny policy (`sgpo.tasks.tiny`, character-level Llama) learns the plain prompt `"{problem}\n"`; the tiny chat
policy (`sgpo.tasks.chat`, Qwen2 with a BPE tokenizer) learns its chat prompt, rendered by the one prompt renderer
(`sgpo.common.prompts`), so the SFT prompts are exactly the ones RL and evaluation send.

The recipe (model shape, levels, iterations, batch, lr, the teacher's slip rate, seed) is the preset; the
result is a HF folder with `pretrain.json` (the preset, the greedy and the sampled (T = 1) accuracy per
level, timings) written last, so a folder with that file is complete. Same preset and seed, same weights (on
the same machine and thread count).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sgpo.tasks.arith import ArithProblem, format_prompt, generate_split, iter_problems, sloppy_solution
from sgpo.tasks.tiny import TinyPreset, build_tiny_policy

Render = Callable[[str], str]

_ANSWER = re.compile(r"Answer:\s*(-?\d+)\s*$")


def extract_answer(text: str) -> str | None:
    """The number on the final `Answer: N` line, or None when the text does not end with one."""
    m = _ANSWER.search(text.strip())
    return m.group(1) if m else None


def eval_problems(preset: TinyPreset) -> list[ArithProblem]:
    """The held-out test problems of the accuracy table (never seen in SFT)."""
    return generate_split("test", preset.eval_steps, preset.eval_per_level, preset.seed, preset.task)


def held_out(test: Sequence[ArithProblem], per_level: int) -> set[str]:
    """Test problems SFT must not see: those of every level with more distinct problems than the test takes.

    A level whose whole problem space fits in its test share (1 step from a start of 1..9: 126 problems) cannot
    be held out; its row in the table then measures accuracy on problems SFT may also have drawn.
    """
    counts: dict[int, int] = {}
    for p in test:
        counts[p.steps] = counts.get(p.steps, 0) + 1
    return {p.problem for p in test if counts[p.steps] >= per_level}


def build_policy(preset: TinyPreset, out_dir: Path) -> Path:
    """Write `preset`'s randomly initialised policy and tokenizer to `out_dir`."""
    from sgpo.tasks.chat import ChatPreset, build_chat_policy

    if isinstance(preset, ChatPreset):
        return build_chat_policy(out_dir, preset)
    return build_tiny_policy(out_dir, seed=preset.seed, shape=preset.model)


def prompt_record(preset: TinyPreset) -> dict[str, Any]:
    """The prompt `preset`'s policy is trained on, as pretrain.json records it (a `PromptConfig` without the
    tokenizer, which is the policy folder itself)."""
    from sgpo.common.prompts import PromptConfig
    from sgpo.tasks.chat import ChatPreset

    cfg = (
        preset.prompt
        if isinstance(preset, ChatPreset)
        else PromptConfig(format="plain", template="{problem}\n")
    )
    return cfg.model_dump(exclude={"tokenizer", "stop_from_tokenizer"}, exclude_none=True)


def renderer(preset: TinyPreset, tokenizer: Any) -> Render:
    """problem -> the policy's input text, as RL and evaluation render it (`sgpo.common.prompts`)."""
    from sgpo.common.prompts import PromptConfig, build_prompter

    if prompt_record(preset) == {"format": "plain", "template": "{problem}\n"}:
        return format_prompt  # the tiny policy's format; the same text
    return build_prompter(PromptConfig(**prompt_record(preset)), tokenizer).render


def _batches(
    problems: Iterator[ArithProblem],
    tokenizer: Any,
    batch_size: int,
    slip_prob: float,
    slip_rng: random.Random,
    render: Render = format_prompt,
) -> Iterator[tuple[Any, Any, Any]]:
    """(input_ids, attention_mask, labels) batches; loss only on the solution and <eos>.

    Solutions are written by a sloppy solver slipping with `slip_prob` per step (`arith.sloppy_solution`).

    Each batch is `batch_size` consecutive problems of the stream, so a batch mixes difficulties. Grouping
    several batches' worth by length (less padding) made batches of one difficulty each, and the tiny policy
    then learned markedly worse.
    """
    import torch

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    while True:
        rows = []
        for _ in range(batch_size):
            p = next(problems)
            prompt = tokenizer(render(p.problem))["input_ids"]
            full = tokenizer(render(p.problem) + sloppy_solution(p, slip_rng, slip_prob))["input_ids"]
            full.append(eos)
            rows.append((full, len(prompt)))
        rows.sort(key=lambda r: len(r[0]))  # shortest first: the row order every pretrained policy has used
        width = len(rows[-1][0])
        ids = torch.full((batch_size, width), pad, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, (full, n_prompt) in enumerate(rows):
            ids[i, : len(full)] = torch.tensor(full)
            mask[i, : len(full)] = 1
            labels[i, n_prompt : len(full)] = torch.tensor(full[n_prompt:])
        yield ids, mask, labels


def accuracy_by_level(
    engine: Any,
    problems: Sequence[ArithProblem],
    temperature: float = 0.0,
    samples: int = 1,
    render: Render = format_prompt,
) -> dict[int, float]:
    """Accuracy per difficulty level (exact final answer) of a generator engine: greedy by default, else the
    mean over `samples` completions per problem at `temperature` (avg@k, seeded). One generate call per level,
    with a budget of the level's longest reference solution plus 24 tokens (`sgpo.tasks.accuracy` evaluates)."""
    from sgpo.generator.sampling import SamplingParams
    from sgpo.tasks.accuracy import LevelItem
    from sgpo.tasks.accuracy import accuracy_by_level as evaluate

    items = [LevelItem(p.problem, p.answer, str(p.steps)) for p in problems]
    by_level: dict[int, list[int]] = {}
    for i, p in enumerate(problems):
        by_level.setdefault(p.steps, []).append(i)

    def sample(chunk: list[int]) -> Any:
        budget = max(len(problems[i].solution) for i in chunk) + 24
        params = SamplingParams(n=samples, temperature=temperature, max_tokens=budget, seed=0)
        return engine.generate([render(problems[i].problem) for i in chunk], params)

    def is_correct(pairs: list[tuple[LevelItem, Any]]) -> list[bool]:
        return [extract_answer(c.text) == it.answer for it, c in pairs]

    result = evaluate(items, sample, is_correct, chunks=[by_level[lv] for lv in sorted(by_level)])
    return {int(lv): acc for lv, acc in result["accuracy"].items()}


def pretrain(
    preset: TinyPreset, target: Path, progress: bool = True, threads: int | None = None
) -> dict[str, Any]:
    """SFT the policy of `preset` (tiny or tiny-chat) into `target` (written atomically); returns the pretrain.json
    record."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers import AutoModelForCausalLM, AutoTokenizer

    console = Console(stderr=True)
    threads = threads or min(os.cpu_count() or 1, 8)
    torch.set_num_threads(threads)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build_policy(preset, work)
        tokenizer = AutoTokenizer.from_pretrained(work)
        render = renderer(preset, tokenizer)
        model = AutoModelForCausalLM.from_pretrained(work, dtype=torch.float32)
        torch.manual_seed(preset.seed)
        test = eval_problems(preset)
        banned = held_out(test, preset.eval_per_level)
        phases = [
            (
                ph.iters,
                _batches(
                    iter_problems(ph.steps, preset.seed, preset.task, banned),
                    tokenizer,
                    preset.batch_size,
                    preset.slip_prob,
                    random.Random(f"sgpo-sft-slips:{preset.seed}:{i}"),
                    render,
                ),
            )
            for i, ph in enumerate(preset.sft_phases)
        ]
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": preset.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=preset.lr,
            betas=(0.9, 0.98),
        )

        total = preset.sft_iters
        decay_from = total - int(preset.decay_frac * total)

        def lr_at(it: int) -> float:  # warmup, constant, linear decay to 10% (a fixed budget's schedule)
            if it < preset.warmup_iters:
                return preset.lr * (it + 1) / preset.warmup_iters
            if it < decay_from:
                return preset.lr
            return preset.lr * (1 - 0.9 * (it - decay_from) / max(1, total - decay_from))

        model.train()
        t0, c0 = time.monotonic(), time.process_time()
        loss_ema = float("nan")
        with Progress(
            TextColumn("[bold]pretrain {task.fields[preset]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}"),
            TimeElapsedColumn(),
            console=console,
            disable=not progress,
        ) as bar:
            task = bar.add_task("sft", total=total, preset=preset.name, loss=float("nan"))
            schedule = [batches for iters, batches in phases for _ in range(iters)]
            for it, batches in enumerate(schedule):
                ids, mask, labels = next(batches)
                for g in opt.param_groups:
                    g["lr"] = lr_at(it)
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                value = float(loss.detach())
                loss_ema = value if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * value
                bar.update(task, advance=1, loss=loss_ema)
        sft_s, sft_cpu_s = time.monotonic() - t0, time.process_time() - c0
        model.save_pretrained(work, safe_serialization=True)
        t1 = time.monotonic()
        from sgpo.generator.hf import HFEngine

        engine = HFEngine(str(work), device="cpu", dtype="float32", max_batch_size=256, batch_wait_s=0.0)
        try:
            accuracy = accuracy_by_level(engine, test, render=render)
            sampled = accuracy_by_level(engine, test, temperature=1.0, samples=2, render=render)
        finally:
            engine.close()
        eval_s = time.monotonic() - t1
        record = {
            "preset": asdict(preset),
            "digest": preset.digest(),
            "prompt": prompt_record(preset),
            "accuracy": {str(k): v for k, v in accuracy.items()},
            "sampled_accuracy": {str(k): v for k, v in sampled.items()},
            "final_loss": loss_ema,
            "sft_seconds": round(sft_s, 1),
            "sft_cpu_seconds": round(sft_cpu_s, 1),
            "load_average": list(os.getloadavg()),
            "eval_seconds": round(eval_s, 1),
            "threads": threads,
            "torch": torch.__version__,
        }
        (work / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
        return record
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def print_table(record: dict[str, Any], preset: TinyPreset) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{preset.name} policy accuracy ({preset.eval_per_level} test problems per level)")
    table.add_column("steps", justify="right")
    table.add_column("greedy", justify="right")
    table.add_column("sampled (T=1)", justify="right")
    table.add_column("role")
    sampled = record.get("sampled_accuracy", {})
    for level, acc in record["accuracy"].items():
        s = int(level)
        role = "sft" if s in preset.sft_steps else "rl" if s in preset.rl_steps else "eval"
        table.add_row(level, f"{acc:.3f}", f"{sampled[level]:.3f}" if level in sampled else "-", role)
    Console().print(table)
    print(
        f"sft {record['sft_seconds']}s wall ({record.get('sft_cpu_seconds', '?')}s cpu) on {record['threads']} "
        f"threads, eval {record['eval_seconds']}s, "
        f"final loss {record['final_loss']:.4f}"
    )
