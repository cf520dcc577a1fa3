"""Recipes: everything `sgpo train` needs for a run, as one TOML file (`recipes/NAME.toml`).

A recipe's `[recipe]` table names the policy (a local Hugging Face folder, or an alias such as `tiny`), the
data, the run's hyperparameters, the held-out evaluation and the GPU layout; every other table (`[algo]`,
`[generator]`, `[trainer]`, `[orchestrator]`, `[judge]`, `[verifier]`, `[tracking]`, ...) is merged over the
run config the launcher writes (`run.toml`), so any service field can be set from a recipe. The shipped recipes
live in this package (`sgpo/launch/recipes/`, linked from the repository's `recipes/`); a preset is a shipped
recipe's name (`--preset tiny` is `--recipe tiny`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


@dataclass(frozen=True)
class TrainPreset:
    name: str
    steps: int
    """Trainer steps of a default run."""
    batch_groups: int
    """Groups (prompts) per trainer step."""
    group_size: int
    """Completions per prompt (G)."""
    lr: float
    """Trainer AdamW learning rate."""
    max_tokens: int
    """Longest completion."""
    temperature: float
    """Rollout sampling temperature."""
    train_per_level: int
    """RL prompts per difficulty level (the arith task)."""
    eval_per_level: int
    """Held-out prompts per difficulty level for the periodic evaluation (the arith task)."""
    eval_samples: int
    """Completions per held-out prompt; held-out accuracy is their mean (avg@k)."""
    eval_temperature: float
    """Sampling temperature of the held-out evaluation (0: greedy, one completion per prompt)."""
    eval_every: int
    """Evaluate every this many trainer steps (and at the start and the end)."""
    checkpoint_every: int
    """Trainer checkpoint interval."""
    max_policy_lag: int
    """How many policy versions generation may run ahead of the trainer."""


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and what to change."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """`[recipe.data]`: the RL prompts and the held-out problems."""

    task: Literal["arith", "file"] = "file"
    """arith: the synthetic task, generated into the run folder (levels, train_per_level, eval_per_level);
    file: `train` is a JSONL of {problem, answer, solution?} rows (what `sgpo data` writes)."""
    train: Path | None = None
    """task = file: the RL prompts. A relative path is taken from the directory `sgpo train` runs in."""
    levels: tuple[int, ...] = (3, 4, 5, 6)
    """task = arith: difficulty levels (steps) of the RL prompts."""
    train_per_level: int = Field(2000, ge=1)
    """task = arith: RL prompts per level."""
    eval_per_level: int = Field(100, ge=1)
    """task = arith: held-out prompts per level."""

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if self.task == "file" and self.train is None:
            raise ValueError(
                "data.task = 'file' needs data.train, a JSONL of {problem, answer} (`sgpo data`)"
            )
        return self


class EvalSpec(_Strict):
    """`[recipe.eval]`: the held-out evaluation the launcher runs at the start, every `every` steps and at the end."""

    every: int = Field(20, ge=1)
    """Evaluate every this many trainer steps."""
    samples: int = Field(4, ge=1)
    """Completions per problem: accuracy is their mean (avg@k)."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature (0: greedy, one completion)."""
    benchmarks: tuple[str, ...] = ()
    """Benchmarks of `sgpo eval` (math500, aime24, aime25, amc23, gsm8k, minerva, olympiadbench) read from
    `data_dir`; accuracy is reported per benchmark. Empty with data.task = arith: the task's held-out levels."""
    limit: int = Field(0, ge=0)
    """First this many problems of each benchmark (0: all)."""
    data_dir: Path | None = None
    """Folder holding the benchmark files (default: ../shared/data beside the checkout)."""
    max_tokens: int = Field(0, ge=0)
    """Longest evaluation answer (0: the rollouts' max_tokens)."""

    @model_validator(mode="after")
    def _check(self) -> EvalSpec:
        from sgpo.tasks.benchmarks import DATA_FILES

        unknown = [b for b in self.benchmarks if b not in DATA_FILES]
        if unknown:
            raise ValueError(f"unknown eval.benchmarks {unknown}; choose from {', '.join(DATA_FILES)}")
        return self


class LayoutSpec(_Strict):
    """`[recipe.layout]`: how many processes of each service, and on which GPUs (CUDA_VISIBLE_DEVICES)."""

    generator_gpus: str = ""
    """GPUs of the generator replicas ("0,1", "0-3"); one replica per tensor-parallel group of them
    ([generator] tensor_parallel_size). Empty: `generator_replicas` replicas without GPU pinning."""
    generator_replicas: int = Field(1, ge=1)
    """Replicas when no generator_gpus are given (on a CPU, each a process of its own)."""
    trainer_gpus: str = ""
    """GPUs of the trainer: one torchrun process per GPU (FSDP2). Empty: `trainer_procs` processes."""
    trainer_procs: int = Field(1, ge=1)
    """Trainer processes when no trainer_gpus are given (several: torchrun with gloo on CPU)."""
    judge_gpus: str = ""
    """GPUs of a local judge model (`[recipe.judge_model]`), served by a generator with the OpenAI API.
    Empty: the judge backend of `[judge]` as configured (symbolic, or an endpoint)."""


class JudgeModelSpec(_Strict):
    """`[recipe.judge_model]`: a judge model served on `layout.judge_gpus` by `sgpo serve generator`."""

    model: str
    """Local Hugging Face folder (or hub id) of the judge model."""
    engine: Literal["hf", "vllm"] = "vllm"
    """Generator engine serving it."""
    tensor_parallel_size: int = Field(0, ge=0)
    """GPUs per judge replica (vllm); 0: all of layout.judge_gpus."""
    max_model_len: int = Field(0, ge=0)
    """vllm: longest context (0: the model's)."""


class RecipeSpec(_Strict):
    """The `[recipe]` table."""

    name: str
    """Names the run folder (runs/<name>-<algo>-s<seed>-<time>)."""
    policy: str
    """Initial policy: a local Hugging Face model folder (config.json, safetensors, tokenizer) or an alias
    (`tiny`, `tiny-random`, `tiny-chat`). A relative path is taken from the directory `sgpo train` runs in."""
    algo: str = "sgpo"
    """Algorithm (`sgpo`, `grpo`, `drgrpo`, `dapo`); `--algo` overrides it."""
    steps: int = Field(ge=1)
    batch_groups: int = Field(ge=1)
    """Prompts per trainer step."""
    group_size: int = Field(ge=2)
    """Completions per prompt (G)."""
    lr: float = Field(gt=0)
    max_tokens: int = Field(ge=1)
    """Longest rollout completion in tokens."""
    temperature: float = Field(1.0, gt=0)
    """Rollout sampling temperature."""
    checkpoint_every: int = Field(10, ge=1)
    max_policy_lag: int = Field(1, ge=0)
    """Policy versions generation may run ahead of the trainer (per replica)."""
    data: DataSpec = DataSpec(task="arith")
    eval: EvalSpec = EvalSpec()
    layout: LayoutSpec = LayoutSpec()
    judge_model: JudgeModelSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> RecipeSpec:
        if self.data.task == "file" and not self.eval.benchmarks:
            raise ValueError(
                "a recipe that trains on a file needs eval.benchmarks for its held-out evaluation "
                "(e.g. ['math500', 'aime24', 'amc23'])"
            )
        return self


@dataclass(frozen=True)
class Recipe:
    """A loaded recipe: its `[recipe]` table and the service tables merged into the run config."""

    spec: RecipeSpec
    tables: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def preset(self) -> TrainPreset:
        s = self.spec
        return TrainPreset(
            name=s.name,
            steps=s.steps,
            batch_groups=s.batch_groups,
            group_size=s.group_size,
            lr=s.lr,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            train_per_level=s.data.train_per_level,
            eval_per_level=s.data.eval_per_level,
            eval_samples=s.eval.samples,
            eval_temperature=s.eval.temperature,
            eval_every=s.eval.every,
            checkpoint_every=s.checkpoint_every,
            max_policy_lag=s.max_policy_lag,
        )


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path as given, else a shipped recipe's name (`tiny`, `qwen2.5-math-1.5b`)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = RECIPES_DIR / f"{p.name.removesuffix('.toml')}.toml"
    # `tiny-chat`, or `recipes/tiny-chat.toml` run outside a checkout (the package ships the same files)
    if (p.parent == Path(".") or p.parent == Path("recipes")) and shipped.is_file():
        return shipped
    names = ", ".join(shipped_recipes())
    raise RecipeError(f"no recipe file {name_or_path}; give a TOML path or a shipped recipe ({names})")


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Read and check a recipe; a `RecipeError` names the file and the field to fix."""
    path = recipe_path(name_or_path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"recipe {path} is not valid TOML: {e}") from e
    if "recipe" not in doc:
        raise RecipeError(f"recipe {path} has no [recipe] table (name, policy, steps, batch_groups, ...)")
    table = doc.pop("recipe")
    try:
        spec = RecipeSpec.model_validate(table)
    except ValidationError as e:
        problems = "; ".join(
            f"recipe.{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise RecipeError(f"recipe {path}: {problems}") from None
    for name, value in doc.items():
        if not isinstance(value, dict):
            raise RecipeError(f"recipe {path}: top-level key {name!r} must be a table such as [trainer]")
    return Recipe(spec, doc, path)


def parse_gpus(text: str) -> tuple[int, ...]:
    """`"0,1"` -> (0, 1); `"2-5"` -> (2, 3, 4, 5); `"0-1,4"` -> (0, 1, 4); "" -> (). A GPU listed twice is an error."""
    out: list[int] = []
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(
                f"expected GPU indices such as 0,1 or 2-5 or 0-1,4; got {text!r} ({part!r})"
            ) from None
    if any(g < 0 for g in out):
        raise ValueError(f"GPU indices are >= 0; got {text!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"a GPU is listed twice in {text!r}")
    return tuple(out)


def _shipped(name: str) -> TrainPreset:
    return load_recipe(RECIPES_DIR / f"{name}.toml").preset


TRAIN_PRESETS: dict[str, TrainPreset] = {"tiny": _shipped("tiny")}
"""The presets of `--preset`: the shipped recipes that run on a CPU with the generated task."""
TINY = TRAIN_PRESETS["tiny"]
