"""`sgpo eval --watch RUN_DIR`: the periodic held-out evaluation of a deployed run, beside its trainer.

`sgpo train` evaluates the policy its generators serve every `eval_every` steps (`TrainRun._evaluate`); a
compose or Helm deployment has no launcher, so this process does the same from the shared volume: it follows
`RUN_DIR/checkpoints/step-N`, and evaluates each checkpoint whose step is a multiple of `eval_every` (and the
run's last step, `max_steps`; and the initial policy as step 0 when given) with the evaluator `sgpo train`
uses (`sgpo.launch.evaluate.evaluate_served_policy` over `sgpo.tasks.accuracy`): the same held-out file, the
prompt of the run config's `[orchestrator.prompt]`, the same sampling (avg@k at the eval temperature, seed 0,
128 prompts a call). Only the transport differs: the weights are loaded into an engine of this process (its
own device: the trainer never pauses) and scored by an in-process `MathVerifier`, both behind the two gRPC
methods the evaluator calls.

It keeps its results with the run, as `sgpo train` does: a line per evaluation appended to `RUN_DIR/eval.jsonl`
(the same fields), `checkpoints/best` + `best.json` pointed at the evaluated step with the best held-out
accuracy (the trainer never prunes what `best` points to, nor, with `keep_every` = `eval_every`, any checkpoint
this process will evaluate), and `eval/*` scalars in the run's trackers (`sgpo.launch.tracking`). It survives
restarts (steps already in eval.jsonl are skipped; `best` is recomputed from it), prints a line per evaluation,
and stops on SIGTERM: between evaluations at once, during one by abandoning it (nothing is written; a restart
redoes it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

log = logging.getLogger(__name__)

EVAL_FILE = "eval.jsonl"


class WatchError(ValueError):
    """Bad options or a run folder that cannot be evaluated; the message says what to give."""


@dataclass(frozen=True)
class WatchOptions:
    """What `sgpo eval --watch` is asked for (None: from the run folder, else `[recipe.eval]`'s defaults)."""

    run_dir: Path
    eval_every: int | None = None
    samples: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    eval_set: Path | None = None
    """The held-out JSONL (default RUN_DIR/eval_problems.jsonl, which `sgpo train` writes)."""
    config: Path | None = None
    """The run config TOML (default RUN_DIR/run.toml): its [orchestrator.prompt] renders the problems."""
    initial_policy: Path | None = None
    """The policy the run started from, evaluated as step 0."""
    max_steps: int = 0
    """The run's last step: evaluated whatever its number, and then the watcher exits (0: until SIGTERM)."""
    engine: str = "hf"
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    poll_s: float = 5.0
    tracking: tuple[str, ...] | None = None
    once: bool = False
    """Evaluate what is there and exit (a finished run)."""
    limit: int = 0
    """Only the first this many problems of each level (0: all): a cheaper, noisier curve."""
    batch: int = 128


@dataclass
class Settings:
    """The resolved evaluation: what every line of eval.jsonl is measured with."""

    eval_every: int
    samples: int
    temperature: float
    max_tokens: int
    eval_set: Path
    level_field: str
    doc: dict[str, Any] = field(default_factory=dict)
    limit: int = 0

    def items(self) -> list[Any]:
        """The held-out problems, the first `limit` of each level when limited."""
        from sgpo.launch.evaluate import load_eval_items

        items = load_eval_items(self.eval_set, self.level_field)
        if not self.limit:
            return items
        seen: dict[str, int] = {}
        out = []
        for it in items:
            seen[it.level] = seen.get(it.level, 0) + 1
            if seen[it.level] <= self.limit:
                out.append(it)
        return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise WatchError(f"cannot read {path}: {e}") from None


def read_evals(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of RUN_DIR/eval.jsonl (a half-written last line is skipped)."""
    from sgpo.common.jsonl import read_jsonl

    return [r for r in read_jsonl(run_dir / EVAL_FILE) if isinstance(r.get("step"), int)]


def resolve_settings(opts: WatchOptions) -> Settings:
    """Flags first; then the run folder (the last line of eval.jsonl, recipe.toml's [recipe.eval], run.toml's
    keep_every and sampling); then `[recipe.eval]`'s defaults."""
    from sgpo.launch.presets import EvalSpec

    run_dir = opts.run_dir
    if not run_dir.is_dir():
        raise WatchError(f"{run_dir} is not a folder; give the run folder (the trainer's run_dir)")
    config = opts.config or (run_dir / "run.toml")
    doc = _read_toml(config) if (opts.config is not None or config.is_file()) else {}
    recipe_path = run_dir / "recipe.toml"
    rec_eval = _read_toml(recipe_path).get("recipe", {}).get("eval", {}) if recipe_path.is_file() else {}
    done = read_evals(run_dir)
    last = done[-1] if done else {}
    default = EvalSpec()
    trainer = doc.get("trainer", {})

    def pick(*values: Any) -> Any:
        return next(v for v in values if v is not None)

    every = pick(opts.eval_every, rec_eval.get("every"), trainer.get("keep_every") or None, default.every)
    samples = pick(opts.samples, last.get("samples"), rec_eval.get("samples"), default.samples)
    temperature = pick(
        opts.temperature, last.get("temperature"), rec_eval.get("temperature"), default.temperature
    )
    sampling_max = doc.get("orchestrator", {}).get("sampling", {}).get("max_tokens")
    max_tokens = pick(opts.max_tokens, rec_eval.get("max_tokens") or None, sampling_max, 0)
    if int(every) < 1:
        raise WatchError(f"--eval-every must be >= 1; got {every}")
    if int(samples) < 1:
        raise WatchError(f"--eval-samples must be >= 1; got {samples}")
    if not (math.isfinite(float(temperature)) and float(temperature) >= 0):
        raise WatchError(f"--eval-temperature must be >= 0 (0: greedy); got {temperature}")
    if int(max_tokens) < 1:
        raise WatchError(
            f"no answer length: give --max-tokens, or --config with [orchestrator.sampling] max_tokens "
            f"({config} {'has none' if config.is_file() else 'does not exist'})"
        )
    if opts.limit < 0:
        raise WatchError(f"--eval-limit must be >= 0 (0: every problem); got {opts.limit}")
    if opts.max_steps < 0:
        raise WatchError(f"--max-steps must be >= 0 (0: until stopped); got {opts.max_steps}")
    if not opts.poll_s > 0:
        raise WatchError(f"--poll-s must be > 0; got {opts.poll_s}")
    eval_set = opts.eval_set or (run_dir / "eval_problems.jsonl")
    if not eval_set.is_file():
        raise WatchError(
            f"held-out set {eval_set} does not exist; give --eval-set (`sgpo data --preset tiny --out DIR` "
            "writes DIR/eval_problems.jsonl; `sgpo train` writes it into the run folder)"
        )
    first = next((ln for ln in eval_set.read_text(encoding="utf-8").splitlines() if ln.strip()), "")
    try:
        row = json.loads(first)
        if not (isinstance(row, dict) and "problem" in row and "answer" in row):
            raise ValueError("needs problem and answer")
    except ValueError as e:
        raise WatchError(
            f"held-out set {eval_set}: the first line is not a JSON row with problem and answer ({e})"
        ) from None
    level_field = "steps" if "steps" in row else "level"
    if opts.initial_policy is not None and not (opts.initial_policy / "config.json").is_file():
        raise WatchError(f"--initial-policy {opts.initial_policy} is not a Hugging Face model folder")
    if float(temperature) == 0:
        samples = 1  # greedy: one completion says it all (as `sgpo train` does)
    if last and (int(samples), float(temperature)) != (last.get("samples"), last.get("temperature")):
        log.warning(
            "eval.jsonl's evaluations used avg@%s at temperature %s; these use avg@%s at %s: the curve mixes two "
            "kinds of accuracy",
            last.get("samples"),
            last.get("temperature"),
            samples,
            temperature,
        )
    return Settings(
        int(every), int(samples), float(temperature), int(max_tokens), eval_set, level_field, doc, opts.limit
    )


def due_steps(
    checkpoints: list[tuple[int, Path]], every: int, max_steps: int, done: set[int]
) -> list[tuple[int, Path]]:
    """The checkpoints to evaluate, oldest first: steps that are multiples of `every`, and `max_steps` (the
    run's last, whatever its number), not evaluated yet."""
    return [
        (step, path)
        for step, path in checkpoints
        if step not in done
        and step > 0
        and (step % every == 0 or step == max_steps)
        and (not max_steps or step <= max_steps)
    ]


class _EngineGenerator:
    """An in-process engine as the `Generate` stub the held-out evaluator calls (the server's conversion)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def Generate(self, request: Any, timeout: float) -> Any:
        from sgpo.generator.server import sampling_from_pb

        return SimpleNamespace(
            results=self.engine.generate(list(request.prompts), sampling_from_pb(request.sampling))
        )


class _LocalVerifier:
    """An in-process `MathVerifier` as the `Verify` stub the held-out evaluator calls."""

    def __init__(self, verifier: Any) -> None:
        self.verifier = verifier

    def Verify(self, request: Any, timeout: float) -> Any:
        from sgpo.common.convert import verdict_to_pb

        pairs = [(it.gold, it.pred) for it in request.items]
        limit = self.verifier.config.max_batch_items
        verdicts: list[Any] = []
        for start in range(0, len(pairs), limit):
            verdicts += self.verifier.verify_batch(pairs[start : start + limit])
        return SimpleNamespace(verdicts=[verdict_to_pb(v) for v in verdicts])


class EvalWatcher:
    """Follows a run folder's checkpoints and evaluates them; `run()` returns the exit status."""

    def __init__(self, opts: WatchOptions, out: Any = None) -> None:
        self.opts = opts
        self.run_dir = opts.run_dir.resolve()
        self.settings = resolve_settings(opts)
        self.out = out
        self.stop = threading.Event()
        self.busy = False
        self.engine: Any = None
        self.verifier: Any = None
        self.tracker: Any = None
        self.best: dict[str, Any] | None = None
        self.new_evals: list[dict[str, Any]] = []
        self._seen: set[int] = set()
        self._warned: set[int] = set()

    # -- output --------------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} evalwatch: {text}"
        if self.out is not None:
            self.out(line)
        else:
            print(line, flush=True)

    # -- the loop ------------------------------------------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        done = {int(r["step"]) for r in read_evals(self.run_dir)}
        self._restore_best()
        self.say(
            f"watching {self.run_dir / 'checkpoints'}: every {s.eval_every} steps"
            + (f" and the last ({self.opts.max_steps})" if self.opts.max_steps else "")
            + f"; {s.eval_set} ({s.level_field}{f', first {s.limit} of each' if s.limit else ''}), avg@{s.samples} at temperature {s.temperature}, "
            f"{s.max_tokens} tokens; {self.opts.engine} engine on {self.opts.device}"
            + (f"; already evaluated: steps {sorted(done)}" if done else "")
        )
        old = signal.signal(signal.SIGTERM, self._on_term)
        interrupted = False
        try:
            self._open_tracker()
            while not self.stop.is_set():
                if self.opts.initial_policy is not None and 0 not in done:
                    self._evaluate(0, self.opts.initial_policy)
                    done.add(0)
                todo = self._todo(done)
                for step, path in todo:
                    if self.stop.is_set():
                        break
                    if self._evaluate(step, path) is not None:
                        done.add(step)
                if self.opts.max_steps and self.opts.max_steps in done:
                    self.say(f"the run's last step ({self.opts.max_steps}) is evaluated: done")
                    break
                if self.opts.once:
                    break
                if not todo:
                    self.stop.wait(self.opts.poll_s)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            signal.signal(signal.SIGTERM, old)
            self._close()
        if interrupted or self.stop.is_set():
            self.say(
                "stopped"
                + (" (an evaluation in progress was abandoned; a restart redoes it)" if interrupted else "")
            )
        return 0

    def _on_term(self, *_: object) -> None:
        self.stop.set()
        if self.busy:
            raise KeyboardInterrupt  # abandon the evaluation in progress: nothing of it is written

    def _todo(self, done: set[int]) -> list[tuple[int, Path]]:
        from sgpo.trainer.checkpoint import list_checkpoints

        found = list_checkpoints(self.run_dir)
        steps = {n for n, _ in found}
        for n in sorted(self._seen - steps - done):
            if n % self.settings.eval_every == 0 and n not in self._warned:
                self._warned.add(n)
                self.say(
                    f"WARNING: checkpoint step-{n} was deleted before it was evaluated: set the trainer's "
                    f"keep_every to {self.settings.eval_every} (SGPO_TRAINER__KEEP_EVERY) so the learning "
                    "curve's checkpoints are kept"
                )
        self._seen |= steps
        return due_steps(found, self.settings.eval_every, self.opts.max_steps, done)

    # -- one evaluation ------------------------------------------------------------------------------------
    def _load(self, step: int, path: Path) -> None:
        """Serve `path`'s weights as policy version `step` (the first call builds the engine from it)."""
        if self.engine is None:
            from transformers.utils import logging as hf_logging

            from sgpo.generator.config import GeneratorConfig
            from sgpo.generator.factory import build_engine

            hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar; our lines say what loads
            gen = self.settings.doc.get("generator", {})
            # model_construct: no SGPO_GENERATOR__* variable of this process's environment changes what is
            # evaluated (as in `sgpo eval`).
            self.engine = build_engine(
                GeneratorConfig.model_construct(
                    model=str(path),
                    engine=self.opts.engine,
                    device=self.opts.device,
                    dtype=self.opts.dtype,
                    threads=self.opts.threads,
                    max_batch_size=int(gen.get("max_batch_size", 256)),
                    batch_wait_s=0.0,
                    max_model_len=gen.get("max_model_len"),
                    gpu_memory_utilization=float(gen.get("gpu_memory_utilization", 0.85)),
                    tensor_parallel_size=int(gen.get("tensor_parallel_size", 1)),
                    policy_version=step,
                )
            )
        else:
            self.engine.update_weights(step, str(path))

    def _evaluate(self, step: int, path: Path) -> dict[str, Any] | None:
        from sgpo.generator.engine import WeightsRejectedError
        from sgpo.launch.evaluate import evaluate_served_policy, run_prompter

        s = self.settings
        self.say(f"evaluating step {step} ({path})...")
        self.busy = True
        try:
            try:
                self._load(step, path)
            except (WeightsRejectedError, OSError) as e:  # pruned or damaged under us: skip it
                self.say(f"WARNING: cannot load {path} ({e}); step {step} not evaluated")
                return None
            if self.verifier is None:
                self.verifier = self._open_verifier()
            result = evaluate_served_policy(
                _EngineGenerator(self.engine),
                _LocalVerifier(self.verifier),
                s.items(),
                run_prompter({"orchestrator": {}, **s.doc}),
                s.max_tokens,
                batch=self.opts.batch,
                samples=s.samples,
                temperature=s.temperature,
            )
        finally:
            self.busy = False
        result["step"] = step
        result["samples"], result["temperature"] = s.samples, s.temperature
        result["sampled"] = self._sampled(step)
        with (self.run_dir / EVAL_FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.new_evals.append(result)
        self._mark_best(result)
        if self.tracker is not None:
            self.tracker.update([], [], self.new_evals)
        accs = "  ".join(f"{lv}:{a:.2f}" for lv, a in result["accuracy"].items())
        best = f" | best {self.best['overall']:.3f} @ {self.best['step']}" if self.best else ""
        self.say(
            f"eval @ step {step:>4}: overall {result['overall']:.3f} | by {s.level_field} {accs} | "
            f"{result['mean_tokens']:.0f} tokens/answer | {result['seconds']:.1f} s{best}"
        )
        return result

    def _sampled(self, step: int) -> int | None:
        """Completions sampled to make the groups steps 1..`step` trained on (groups.jsonl, when there is one)."""
        from sgpo.launch.train import Monitor

        monitor = Monitor(self.run_dir)
        monitor.poll()
        batch_groups = int(self.settings.doc.get("trainer", {}).get("batch_groups", 1))
        return monitor.sampled_at(step, batch_groups)

    def _open_verifier(self) -> Any:
        from sgpo.verifier import MathVerifier, VerifierConfig

        # the run's [verifier] table decides verdicts as the served verifier does; wiring is not ours
        table = self.settings.doc.get("verifier", {})
        wiring = {"host", "port", "metrics_port", "log_level"}
        keep = {k: v for k, v in table.items() if k in VerifierConfig.model_fields and k not in wiring}
        return MathVerifier(VerifierConfig(**{"workers": 2, **keep}))

    # -- best pointer --------------------------------------------------------------------------------------
    def _restore_best(self) -> None:
        """The best evaluated step so far (eval.jsonl), its pointer repaired if it is missing or stale."""
        from sgpo.trainer.checkpoint import STATE_FILE

        best = None
        for r in read_evals(self.run_dir):
            ok = (self.run_dir / "checkpoints" / f"step-{r['step']}" / STATE_FILE).is_file()
            if r["step"] >= 1 and ok and (best is None or r["overall"] > best["overall"]):
                best = r
        if best is not None:
            self._point(best)

    def _mark_best(self, result: dict[str, Any]) -> None:
        from sgpo.trainer.checkpoint import STATE_FILE

        step = int(result["step"])
        if step < 1 or (self.best is not None and result["overall"] <= self.best["overall"]):
            return
        if not (self.run_dir / "checkpoints" / f"step-{step}" / STATE_FILE).is_file():
            self.say(f"WARNING: checkpoint step-{step} is gone; best pointer unchanged")
            return
        self._point(result)

    def _point(self, result: dict[str, Any]) -> None:
        from sgpo.launch.train import point_best

        link = self.run_dir / "checkpoints" / "best"
        if not (link.is_symlink() and os.readlink(link) == f"step-{result['step']}"):
            point_best(self.run_dir, int(result["step"]), result)
        self.best = result

    # -- trackers ------------------------------------------------------------------------------------------
    def _open_tracker(self) -> None:
        from sgpo.launch.tracking import RunTracker, resolve_tracking

        table = None
        saved = self.run_dir / "tracking.toml"
        if saved.is_file():
            table = _read_toml(saved).get("tracking")
        cfg = resolve_tracking(table, self.opts.tracking)
        if not cfg.backends:
            return
        s = self.settings
        hparams = {
            **s.doc,
            "eval": {
                "every": s.eval_every,
                "samples": s.samples,
                "temperature": s.temperature,
                "max_tokens": s.max_tokens,
                "set": str(s.eval_set),
                "limit": s.limit,
            },
        }
        batch_groups = int(s.doc.get("trainer", {}).get("batch_groups", 1))
        self.tracker = RunTracker(cfg, self.run_dir, hparams, batch_groups)

    def _close(self) -> None:
        for thing, name in ((self.tracker, "tracker"), (self.engine, "engine"), (self.verifier, "verifier")):
            if thing is None:
                continue
            try:
                thing.close()
            except Exception as e:  # closing is best effort
                log.warning("closing the %s failed: %s", name, e)
        self.tracker = self.engine = self.verifier = None


def wait_for_run_dir(opts: WatchOptions, out: Any = None) -> bool:
    """Wait until the run folder exists (a deployment starts the watcher beside a trainer that has not
    written it yet); False when SIGTERM came first."""
    if opts.run_dir.is_dir() or opts.once:
        return True
    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} evalwatch: waiting for the run folder {opts.run_dir}"
        (out or (lambda t: print(t, flush=True)))(line)
        while not opts.run_dir.is_dir():
            if stop.wait(min(opts.poll_s, 2.0)):
                return False
    finally:
        signal.signal(signal.SIGTERM, old)
    return True


def watch(opts: WatchOptions, out: Any = None) -> int:
    """Run the watcher until the last step, SIGTERM, or (`once`) until what is there is evaluated."""
    if not wait_for_run_dir(opts, out):
        return 0
    return EvalWatcher(opts, out).run()
