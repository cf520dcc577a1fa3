"""A model's accuracy on math benchmarks, sampled by a generator engine in-process and
scored by the verifier.

For each benchmark (`sgpo.tasks.benchmarks`) every problem is rendered into a prompt, sampled k times by the
`hf` or `vllm` engine (`sgpo.generator`), and every completion is scored by `MathVerifier` against the gold
answer (`score_completions`, the one scoring path, which the gold-solution test exercises). The report is
avg@k and unbiased pass@k (`sgpo.tasks.passk`), with unscorable verdicts and over-long prompts counted
separately instead of silently as wrong: a table on screen, a JSON file (metrics, config, machine) and a JSONL
of per-item records next to it. Both files are written at the end, through temp files and renames, so a
crashed or interrupted run leaves nothing half-written.

Prompts are rendered by `sgpo.common.prompts`, the renderer training and held-out evaluation use: the tiny
policies (a folder with `pretrain.json`, or a checkpoint with their tokenizer) get exactly the prompt they were
trained on (tiny: `"{problem}\\n"`; tiny-chat: its chat prompt); a model with a chat template gets it with the
Qwen2.5-Math instruction as the system message; other models get the problem and the instruction as plain
text. `--prompt-template` overrides with a string holding `{problem}`. The tokenizer's stop strings are sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sgpo.common.prompts import BOXED_INSTRUCTION, PromptConfig, Prompter
from sgpo.tasks.accuracy import level_order, sample_and_score
from sgpo.tasks.benchmarks import (
    BenchmarkItem,
    BenchmarkName,
)
from sgpo.tasks.passk import ProblemCounts, compute_benchmark_metrics

HELP = "evaluate a model on math benchmarks (avg@k, pass@k) with a generator engine and the verifier"

# Qwen2.5-Math's chain-of-thought instruction (its README and evaluation harness), as the system message.
INSTRUCTION = BOXED_INSTRUCTION
PromptStyle = Literal["tiny", "chat", "plain", "custom"]
PROMPT_STYLES: tuple[str, ...] = ("auto", "tiny", "chat", "plain")
# Completion budgets when --max-tokens is not given: the tiny policy's longest solution is ~200 characters.
DEFAULT_MAX_TOKENS: dict[str, int] = {"tiny": 256, "chat": 4096, "plain": 4096, "custom": 4096}
# Prompts per generate call when --batch-size is not given, and calls in flight at once: hf batches one call at
# a time; vLLM schedules everything in flight itself, so many small calls keep it full and the bar moving.
DEFAULT_BATCH: dict[str, int] = {"hf": 64, "vllm": 64}
CONCURRENT_CALLS: dict[str, int] = {"hf": 1, "vllm": 16}


class UsageError(ValueError):
    """Bad input (the CLI exits with status 2); the message says what was given and what is needed."""


@dataclass
class EvalOptions:
    """Everything an evaluation depends on, checked (written into the result JSON)."""

    model: str
    model_path: Path
    benchmarks: list[BenchmarkName]
    k: int
    pass_k: list[int]
    temperature: float
    top_p: float
    max_tokens: int | None
    limit: int | None
    engine: Literal["hf", "vllm"]
    device: str
    dtype: str
    batch_size: int
    seed: int
    out: Path
    data_dir: Path
    prompt_template: str
    threads: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.85
    verifier_workers: int = 2
    verifier_deadline_s: float = 5.0
    save_completions: bool = False
    progress: bool = True

    @property
    def items_path(self) -> Path:
        return items_path_for(self.out)


def items_path_for(out: Path) -> Path:
    """The per-item JSONL next to the result JSON: results.json -> results.items.jsonl."""
    return out.with_name(f"{out.stem}.items.jsonl")


# ---------------------------------------------------------------- prompts


def is_tiny_policy(model_path: Path, tokenizer: Any = None) -> bool:
    """One of the project's tiny policies (tiny, tiny-chat): `sgpo pretrain` wrote pretrain.json, or (a run
    checkpoint, which carries the tokenizer but not pretrain.json) the tokenizer has its chat template."""
    if (model_path / "pretrain.json").is_file():
        return True
    from sgpo.tasks.chat import CHATML_TEMPLATE
    from sgpo.tasks.tiny import CHAT_TEMPLATE

    return tokenizer is not None and getattr(tokenizer, "chat_template", None) in (
        CHAT_TEMPLATE,
        CHATML_TEMPLATE,
    )


def prompt_style(template: str, model_path: Path, tokenizer: Any) -> PromptStyle:
    """Which prompt format `--prompt-template` resolves to for this model."""
    if template == "auto":
        if is_tiny_policy(model_path, tokenizer):
            return "tiny"
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if template in ("tiny", "chat", "plain"):
        return template  # type: ignore[return-value]
    return "custom"


def prompt_config(style: PromptStyle, template: str, model_path: Path, tokenizer: Any = None) -> PromptConfig:
    """The `PromptConfig` of a style: `tiny` is the prompt the tiny policy (plain) or the tiny chat policy (its
    chat prompt) was trained on, read from the folder (`sgpo.tasks.chat.policy_prompt`); `chat` the chat
    template with the Qwen2.5-Math instruction as the system message; `plain` the problem and the instruction as
    text; `custom` the given template."""
    if style == "tiny":
        from sgpo.tasks.chat import CHAT_PROMPT, CHATML_TEMPLATE, policy_prompt

        found = policy_prompt(model_path)
        if found is None and getattr(tokenizer, "chat_template", None) == CHATML_TEMPLATE:
            found = CHAT_PROMPT
        return (found or PromptConfig()).model_copy(update={"tokenizer": None})
    if style == "plain":
        return PromptConfig(format="plain", template=f"{{problem}}\n{INSTRUCTION}\n")
    if style == "custom":
        return PromptConfig(format="plain", template=template)
    return PromptConfig(format="chat", system=INSTRUCTION)


def build_prompter(style: PromptStyle, template: str, model_path: Path, tokenizer: Any) -> Prompter:
    """The `Prompter` (`sgpo.common.prompts`, the renderer training uses too) of `style` for this model, rendering
    with the engine's own `tokenizer`."""
    from sgpo.common.prompts import build_prompter as build

    return build(prompt_config(style, template, model_path, tokenizer), tokenizer)


# ---------------------------------------------------------------- scoring


def score_completions(
    verifier: Any, items: Sequence[BenchmarkItem], completions: Sequence[Sequence[str]]
) -> list[list[Any]]:
    """The verdict of every completion of every item against the item's gold answer (and tolerance).

    The one scoring path of `sgpo eval`: the verifier extracts each completion's final answer (last box,
    `#### N`, `Answer:` line, ...) and compares it with `item.answer`. Batched; split to the verifier's limit.
    """
    if len(items) != len(completions):
        raise ValueError(f"one list of completions per item; got {len(completions)} for {len(items)} items")
    pairs = [(it.answer, text) for it, texts in zip(items, completions, strict=True) for text in texts]
    tolerances = [it.tolerance for it, texts in zip(items, completions, strict=True) for _ in texts]
    limit = verifier.config.max_batch_items
    verdicts: list[Any] = []
    for start in range(0, len(pairs), limit):
        verdicts += verifier.verify_batch(
            pairs[start : start + limit], tolerances=tolerances[start : start + limit]
        )
    out, pos = [], 0
    for texts in completions:
        out.append(verdicts[pos : pos + len(texts)])
        pos += len(texts)
    return out


# ---------------------------------------------------------------- one benchmark


def _chunk_seed(seed: int, benchmark: str, start: int) -> int:
    """A distinct, reproducible seed per generate call (engines derive per-prompt streams from it)."""
    digest = hashlib.blake2b(f"{seed}:{benchmark}:{start}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


@dataclass
class BenchmarkRun:
    """One benchmark's metrics (JSON-ready) and per-item records."""

    metrics: dict[str, Any]
    records: list[dict[str, Any]]


def _metrics(records: Sequence[dict[str, Any]], k: int, pass_k: Sequence[int]) -> dict[str, Any]:
    counts = [ProblemCounts(k, r["correct"], r["unscorable"]) for r in records]
    out: dict[str, Any] = dict(compute_benchmark_metrics(counts, pass_k))
    out["prompt_too_long"] = sum(r["prompt_too_long"] for r in records)
    sampled = [r for r in records if not r["prompt_too_long"]]
    lengths = [t for r in sampled for t in r["completion_tokens"]]
    out["truncated_rate"] = (
        sum(f == "length" for r in sampled for f in r["finish_reasons"]) / len(lengths) if lengths else 0.0
    )
    out["mean_completion_tokens"] = sum(lengths) / len(lengths) if lengths else 0.0
    return out


def evaluate_benchmark(
    name: str,
    items: Sequence[BenchmarkItem],
    engine: Any,
    verifier: Any,
    prompter: Prompter,
    opts: EvalOptions,
    max_tokens: int,
    on_generated: Callable[[int], None] = lambda n: None,
) -> BenchmarkRun:
    """Sample `opts.k` completions of every item with `engine`, score them, and summarize.

    A prompt that does not fit the model's context is not sampled: its k samples count as not correct, and
    the item and the metrics say `prompt_too_long`. Generation and verification overlap: a finished chunk is
    verified while the next one is sampled.
    """
    from sgpo.generator.sampling import SamplingParams

    t0 = time.perf_counter()
    prompts = [prompter.render(it.problem) for it in items]
    fits = [engine.count_tokens(p) < engine.max_model_len for p in prompts]
    on_generated(sum(not f for f in fits))
    todo = [i for i, f in enumerate(fits) if f]
    chunks = [todo[s : s + opts.batch_size] for s in range(0, len(todo), opts.batch_size)]

    def sample(chunk: list[int]) -> list[Any]:
        params = SamplingParams(
            n=opts.k,
            temperature=opts.temperature,
            top_p=opts.top_p,
            max_tokens=max_tokens,
            seed=_chunk_seed(opts.seed, name, chunk[0]),
            stop=tuple(prompter.with_stop(())),
        )
        return list(engine.generate([prompts[i] for i in chunk], params))

    def verify(chunk: list[int], outs: list[Any]) -> list[list[Any]]:
        texts = [[c.text for c in out.completions] for out in outs]
        return score_completions(verifier, [items[i] for i in chunk], texts)

    scored = sample_and_score(
        chunks, sample, verify, concurrency=CONCURRENT_CALLS.get(opts.engine, 1), on_sampled=on_generated
    )
    results, verdicts = scored.outputs, scored.verdicts

    records = []
    for i, it in enumerate(items):
        rec: dict[str, Any] = {
            "benchmark": name,
            "id": it.id,
            "level": it.level,
            "subject": it.subject,
            "gold": it.answer,
        }
        if it.tolerance is not None:
            rec["tolerance"] = it.tolerance
        if it.unit:
            rec["unit"] = it.unit
        if i in results:
            comps, vs = results[i].completions, verdicts[i]
            rec.update(
                prompt_too_long=False,
                correct=sum(v.status == "correct" for v in vs),
                unscorable=sum(v.status == "unscorable" for v in vs),
                extracted=[v.extracted for v in vs],
                verdicts=[v.status for v in vs],
                reasons=[v.reason for v in vs],
                finish_reasons=[c.finish_reason for c in comps],
                completion_tokens=[len(c.token_ids) for c in comps],
            )
            if opts.save_completions:
                rec["completions"] = [c.text for c in comps]
        else:
            rec.update(
                prompt_too_long=True,
                correct=0,
                unscorable=0,
                extracted=[],
                verdicts=[],
                reasons=[f"prompt does not fit the model's context of {engine.max_model_len} tokens"],
                finish_reasons=[],
                completion_tokens=[],
            )
        records.append(rec)

    metrics = _metrics(records, opts.k, opts.pass_k)
    levels = sorted({r["level"] for r in records if r["level"]}, key=level_order)
    if levels:
        metrics["by_level"] = {
            lv: _metrics([r for r in records if r["level"] == lv], opts.k, opts.pass_k) for lv in levels
        }
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    return BenchmarkRun(metrics, records)


# ---------------------------------------------------------------- the run


def machine_info(engine_name: str) -> dict[str, Any]:
    """Where the numbers came from: host, Python, library versions, accelerator."""
    import torch
    import transformers

    from sgpo import __version__

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "sgpo": __version__,
        "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else [],
    }
    if engine_name == "vllm":
        import vllm

        info["vllm"] = vllm.__version__
    return info


def _write_atomically(path: Path, write: Callable[[Any], None]) -> Path:
    """Write through a temp file in the same folder; the caller renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        write(f)
    return tmp


def write_results(opts: EvalOptions, result: dict[str, Any], records: Sequence[dict[str, Any]]) -> None:
    """The items JSONL, then the result JSON (the JSON appears last: its presence means both are complete)."""

    def items(f: Any) -> None:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    tmp_items = _write_atomically(opts.items_path, items)
    try:
        tmp_json = _write_atomically(opts.out, lambda f: f.write(json.dumps(result, indent=2) + "\n"))
    except BaseException:
        tmp_items.unlink(missing_ok=True)
        raise
    tmp_items.replace(opts.items_path)
    tmp_json.replace(opts.out)


def print_table(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    cfg = result["config"]
    k = cfg["k"]
    table = Table(
        title=f"{result['model']}  ({cfg['engine']}, k={k}, temperature {cfg['temperature']}, "
        f"prompt {result['prompt_style']})"
    )
    table.add_column("benchmark", no_wrap=True)
    table.add_column("problems", justify="right")
    table.add_column(f"avg@{k}", justify="right")
    for pk in cfg["pass_k"]:
        table.add_column(f"pass@{pk}", justify="right")
    table.add_column("unscorable", justify="right")
    table.add_column("too long", justify="right")
    table.add_column("truncated", justify="right")
    table.add_column("seconds", justify="right")

    def row(label: str, m: dict[str, Any], seconds: str) -> list[str]:
        cells = [label, str(m["problems"]), f"{m.get(f'avg@{k}', 0.0):.3f}"]
        cells += [f"{m.get(f'pass@{pk}', 0.0):.3f}" for pk in cfg["pass_k"]]
        cells += [str(m["unscorable"]), str(m["prompt_too_long"]), f"{m['truncated_rate']:.0%}", seconds]
        return cells

    for name, m in result["results"].items():
        table.add_row(*row(name, m, f"{m['seconds']:.1f}"))
        if name == "arith":
            for level, lm in m.get("by_level", {}).items():
                table.add_row(*row(f"  {level} step{'s' if level != '1' else ''}", lm, ""), style="dim")
    console.print(table)
    console.print(
        "avg@k counts unscorable samples (the verifier failed) as not correct: the accuracy lies in "
        "[avg@k, avg@k + unscorable/samples]; 'too long': prompts longer than the context, never sampled.",
        style="dim",
        highlight=False,
        markup=False,
    )


def arith_split_note(model_path: Path) -> str | None:
    """Why the arith split may not be this tiny policy's held-out set: it was pretrained with another preset."""
    from sgpo.tasks.tiny import TINY_PRESET

    try:
        preset = json.loads((model_path / "pretrain.json").read_text())["preset"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    current = json.loads(json.dumps(asdict(TINY_PRESET)))
    differs = [key for key in ("task", "eval_steps", "seed") if preset.get(key) != current[key]]
    if not differs:
        return None
    return (
        f"{model_path} was pretrained with another tiny preset ({', '.join(differs)} differ); the arith split "
        "comes from the current preset, so it may overlap that policy's training problems"
    )


def evaluate(opts: EvalOptions, data: dict[BenchmarkName, list[BenchmarkItem]], err: Any) -> dict[str, Any]:
    """Evaluate `opts.model_path` (a model folder) on the loaded benchmarks `data`; writes the result JSON and
    the items JSONL and returns the result. Notes and progress go to the rich console `err`. Raises
    UsageError when the prompt format cannot apply to this model."""

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers.utils import logging as hf_logging

    from sgpo.verifier import MathVerifier, VerifierConfig

    hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar; ours show the evaluation
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    from sgpo.generator.config import GeneratorConfig
    from sgpo.generator.factory import build_engine

    # model_construct: the options are checked already, and no SGPO_GENERATOR__* variable of the caller's
    # environment may change what is evaluated.
    engine = build_engine(
        GeneratorConfig.model_construct(
            model=str(opts.model_path),
            engine=opts.engine,
            device=opts.device,
            dtype=opts.dtype,
            max_batch_size=opts.batch_size * opts.k,
            batch_wait_s=0.0,
            max_model_len=opts.max_model_len,
            gpu_memory_utilization=opts.gpu_memory_utilization,
            threads=opts.threads,
        )
    )
    try:
        tokenizer = getattr(engine, "tokenizer", None)
        style = prompt_style(opts.prompt_template, opts.model_path, tokenizer)
        if style == "chat" and not getattr(tokenizer, "chat_template", None):
            raise UsageError(
                f"--prompt-template chat: {opts.model} has no chat template; use plain or a template "
                "string containing {problem}"
            )
        if style == "tiny" and "arith" in opts.benchmarks:
            note = arith_split_note(opts.model_path)
            if note:
                err.print(f"note: {note}", highlight=False, markup=False)
        prompter = build_prompter(style, opts.prompt_template, opts.model_path, tokenizer)
        max_tokens = opts.max_tokens or DEFAULT_MAX_TOKENS[style]
        if opts.temperature == 0 and opts.k > 1:
            err.print(f"note: temperature 0 is greedy: the {opts.k} samples of a problem will be identical")
        vcfg = VerifierConfig(workers=opts.verifier_workers, deadline_s=opts.verifier_deadline_s)
        runs: dict[str, BenchmarkRun] = {}
        with (
            MathVerifier(vcfg) as verifier,
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("problems"),
                TimeElapsedColumn(),
                console=err,
                disable=not opts.progress,
            ) as bar,
        ):
            for name, items in data.items():
                task = bar.add_task(name, total=len(items))
                runs[name] = evaluate_benchmark(
                    name,
                    items,
                    engine,
                    verifier,
                    prompter,
                    opts,
                    max_tokens,
                    on_generated=lambda n, task=task: bar.advance(task, n),
                )
        model_name = engine.model_name
        machine = machine_info(opts.engine)
    finally:
        engine.close()

    config = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in asdict(opts).items()
        if k not in ("progress", "model_path", "out")
    }
    config.update(
        max_tokens=max_tokens, verifier=vcfg.model_dump(include={"workers", "deadline_s", "fallback"})
    )
    if "arith" in opts.benchmarks:
        from sgpo.tasks.tiny import TINY_PRESET

        config["arith"] = {
            "levels": list(TINY_PRESET.eval_steps),
            "per_level": TINY_PRESET.eval_per_level,
            "seed": TINY_PRESET.seed,
            "spec": asdict(TINY_PRESET.task),
        }
    result = {
        "model": str(opts.model_path),
        "model_name": model_name,
        "prompt_style": style,
        "config": config,
        "machine": machine,
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
        "results": {name: r.metrics for name, r in runs.items()},
        "items_file": opts.items_path.name,
    }
    write_results(opts, result, [rec for r in runs.values() for rec in r.records])
    return result
