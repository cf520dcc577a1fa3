"""Experiment trackers for a run: TensorBoard (on by default), Weights & Biases and MLflow.

One place logs to them: the launcher, which already follows the files the services write (`metrics.jsonl`
from the trainer, `groups.jsonl` from the orchestrator) and writes `eval.jsonl` itself. So the services carry
no tracker code, a deployment that keeps the run folder can be logged afterwards (`RunTracker.backfill`), and
a tracker that is slow or down never stalls a training step. Every value is logged with the trainer step as
x-axis:

- `train/<name>`: each numeric field of the trainer's per-step line (loss, kl, clip_fraction, entropy,
  grad_norm, lr, tokens_per_s, policy lag, queue depth, ...).
- `groups/<name>`: the orchestrator's statistics over the `batch_groups` groups that trainer step s consumed
  (the queue is read in order: groups (s-1)B+1 .. sB): all_negative, colored, mixed, all_positive fractions,
  accuracy, reward and tokens means, completions sampled so far, and, when the orchestrator's lines carry them,
  the uncolorable and failed-judgement fractions and the truncation rate (`uncolorable`, `judge_failed`,
  `truncated` fields).
- `eval/overall`, `eval/level_<n>` (held-out accuracy by number of steps), `eval/mean_tokens`.

The resolved run config is logged as hyper-parameters (flattened `section.key`), and as TOML text.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)
BACKENDS = ("tensorboard", "wandb", "mlflow")


class TrackingError(ValueError):
    """A bad `[tracking]` table or a backend that cannot start; the message says what to do."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorBoardConfig(_Strict):
    dir: str = "tensorboard"
    """Event files go here, relative to the run folder (or absolute)."""


class WandbConfig(_Strict):
    project: str = "sgpo"
    entity: str | None = None
    mode: Literal["online", "offline"] = "offline"
    """offline: run files under the run folder's wandb/ (`wandb sync` uploads them); online needs `wandb login`."""
    dir: str | None = None
    """Where W&B writes its wandb/ folder (default: the run folder)."""


class MlflowConfig(_Strict):
    tracking_uri: str | None = None
    """An MLflow server (http://...) or store (sqlite:///mlflow.db); default: a file store in the run folder's
    mlruns/ (MLFLOW_ALLOW_FILE_STORE is set for it: MLflow >= 3.7 asks for that)."""
    experiment: str = "sgpo"


class TrackingConfig(_Strict):
    """The `[tracking]` table of a run config."""

    backends: tuple[Literal["tensorboard", "wandb", "mlflow"], ...] = ("tensorboard",)
    tensorboard: TensorBoardConfig = Field(default_factory=TensorBoardConfig)
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)

    @classmethod
    def from_table(cls, table: Any) -> TrackingConfig:
        if table is None:
            return cls()
        if not isinstance(table, dict):
            raise TrackingError('[tracking] must be a table, e.g. [tracking] backends = ["tensorboard"]')
        try:
            return cls.model_validate(table)
        except ValidationError as e:
            lines = [
                f"  tracking.{'.'.join(str(x) for x in err['loc'])}: {err['msg']} (given {err.get('input')!r})"
                for err in e.errors()
            ]
            raise TrackingError(
                "invalid [tracking] config:\n" + "\n".join(lines) + f"\n  backends are {list(BACKENDS)}"
            ) from None


def check_backends(cfg: TrackingConfig) -> None:
    """Raise `TrackingError` (saying what to install) when a chosen backend's package is missing."""
    import importlib.util

    need = {
        "tensorboard": ("tensorboard", "pip install tensorboard"),
        "wandb": ("wandb", "pip install 'sgpo[wandb]'"),
    }
    need["mlflow"] = ("mlflow", "pip install 'sgpo[mlflow]'")
    for backend in cfg.backends:
        module, fix = need[backend]
        if importlib.util.find_spec(module) is None:
            raise TrackingError(
                f"the {backend} tracker needs the `{module}` package: {fix} (or leave {backend} out of "
                "[tracking] backends / --tracking)"
            )


def resolve_tracking(table: Any, backends: tuple[str, ...] | None = None) -> TrackingConfig:
    """The `[tracking]` table, with `backends` (a command line's choice) overriding its backends."""
    cfg = TrackingConfig.from_table(table)
    if backends is not None:
        cfg = TrackingConfig.from_table({**cfg.model_dump(), "backends": list(backends)})
    try:
        check_backends(cfg)
    except TrackingError as e:
        if table is not None or backends is not None:
            raise
        # Nobody asked for TensorBoard: a missing package (it is a dependency) costs the event files only.
        log.warning("%s; running without TensorBoard event files", e)
        cfg = TrackingConfig.from_table({**cfg.model_dump(), "backends": []})
    return cfg


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; lists become their JSON text."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, bool | int | float | str):
            out[key] = v
        elif v is not None:
            out[key] = json.dumps(v, default=str)
    return out


# -- backends ------------------------------------------------------------------------------------------------
class _TensorBoard:
    def __init__(self, cfg: TensorBoardConfig, run_dir: Path, name: str, config: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError as e:
            raise TrackingError(
                f"the tensorboard backend needs the `tensorboard` package ({e}); `pip install tensorboard`, "
                "or set [tracking] backends = [] to log nothing"
            ) from None
        self.dir = Path(cfg.dir) if Path(cfg.dir).is_absolute() else run_dir / cfg.dir
        self.writer = SummaryWriter(log_dir=str(self.dir))
        flat = flatten(config)
        exp, ssi, sei = hparams(flat, {})
        file_writer: Any = self.writer.file_writer
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        import tomli_w

        self.writer.add_text("config", "```toml\n" + tomli_w.dumps(_toml_safe(config)) + "\n```", 0)
        self.writer.flush()

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, cfg: WandbConfig, run_dir: Path, name: str, config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise TrackingError(
                "the wandb backend needs the `wandb` package: pip install 'sgpo[wandb]'"
            ) from None
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=cfg.mode,
            dir=str(cfg.dir or run_dir),
            name=name,
            config=config,
            reinit="create_new",
        )
        # Trainer metrics, group statistics and evaluations arrive out of step order: a custom x-axis lets
        # W&B take each where it belongs (its own `step` must only increase).
        self.run.define_metric("trainer_step")
        self.run.define_metric("*", step_metric="trainer_step")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({**metrics, "trainer_step": step})

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.run.finish()


class _Mlflow:
    def __init__(self, cfg: MlflowConfig, run_dir: Path, name: str, config: dict[str, Any]) -> None:
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise TrackingError(
                "the mlflow backend needs the `mlflow` package: pip install 'sgpo[mlflow]'"
            ) from None
        self.uri = cfg.tracking_uri or (run_dir / "mlruns").resolve().as_uri()
        if self.uri.startswith("file:") or "://" not in self.uri:
            import os

            # MLflow >= 3.7 refuses its file store unless asked: a run folder's store needs no database.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(cfg.experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(cfg.experiment)
        self.run_id = self.client.create_run(exp_id, run_name=name).info.run_id
        params = [Param(k[:250], str(v)[:6000]) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _toml_safe(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: _toml_safe(v) if isinstance(v, dict) else v for k, v in doc.items() if v is not None}


# -- what gets logged ----------------------------------------------------------------------------------------
def step_scalars(line: dict[str, Any]) -> dict[str, float]:
    """The trainer's per-step line as `train/<name>` scalars."""
    return {
        f"train/{k}": float(v)
        for k, v in line.items()
        if k not in ("step", "time_unix") and isinstance(v, int | float) and not isinstance(v, bool)
    }


def group_scalars(window: list[dict[str, Any]]) -> dict[str, float]:
    """The orchestrator's statistics over the groups one trainer step consumed, as `groups/<name>` scalars."""
    n = len(window)
    out: dict[str, float] = {}
    for kind in ("all_negative", "all_positive", "mixed", "unscorable"):
        out[f"groups/{kind}_fraction"] = sum(g.get("kind") == kind for g in window) / n
    out["groups/colored_fraction"] = sum(bool(g.get("colored")) for g in window) / n
    for key, name in (("accuracy", "accuracy"), ("reward_mean", "reward_mean"), ("tokens", "tokens_mean")):
        vals = [float(g[key]) for g in window if isinstance(g.get(key), int | float)]
        if vals:
            out[f"groups/{name}"] = sum(vals) / len(vals)
    if "sampled" in window[-1]:
        out["groups/completions_sampled"] = float(window[-1]["sampled"])
    # Fields the orchestrator's line may carry (logged only where present).
    for key, name in (("uncolorable", "uncolorable_fraction"), ("judge_failed", "failed_judgement_fraction")):
        if any(key in g for g in window):
            out[f"groups/{name}"] = sum(bool(g.get(key)) for g in window) / n
    if any("truncated" in g for g in window):
        completions = sum(int(g.get("completions", 0)) for g in window)
        truncated = sum(int(g.get("truncated", 0)) for g in window)
        out["groups/truncation_rate"] = truncated / completions if completions else 0.0
    return out


def eval_scalars(result: dict[str, Any]) -> dict[str, float]:
    """A held-out evaluation as `eval/overall`, `eval/level_<n>` and `eval/mean_tokens`."""
    out = {"eval/overall": float(result["overall"])}
    for level, acc in result.get("accuracy", {}).items():
        out[f"eval/level_{level}"] = float(acc)
    if isinstance(result.get("mean_tokens"), int | float):
        out["eval/mean_tokens"] = float(result["mean_tokens"])
    if isinstance(result.get("sampled"), int | float):
        out["eval/completions_sampled"] = float(result["sampled"])
    return out


class RunTracker:
    """Logs a run's trainer lines, group windows and evaluations to the configured backends.

    `update(steps, groups, evals)` takes the whole lists seen so far (the launcher's monitor keeps them) and
    logs only what is new; a group window is logged once all `batch_groups` groups of it are in.
    """

    def __init__(
        self,
        cfg: TrackingConfig,
        run_dir: Path,
        config: dict[str, Any],
        batch_groups: int,
        name: str | None = None,
    ) -> None:
        if batch_groups < 1:
            raise TrackingError(f"batch_groups must be >= 1; got {batch_groups}")
        self.cfg, self.run_dir, self.batch_groups = cfg, Path(run_dir), batch_groups
        name = name or self.run_dir.name
        makers: dict[str, tuple[Any, Any]] = {
            "tensorboard": (_TensorBoard, cfg.tensorboard),
            "wandb": (_Wandb, cfg.wandb),
            "mlflow": (_Mlflow, cfg.mlflow),
        }
        self.backends: list[Any] = []
        try:
            for backend in dict.fromkeys(cfg.backends):
                cls, sub = makers[backend]
                self.backends.append(cls(sub, self.run_dir, name, config))
        except BaseException:
            self.close()
            raise
        self._steps = self._windows = self._evals = 0
        self._warned: set[str] = set()

    def _log(self, metrics: dict[str, float], step: int) -> None:
        for b in self.backends:
            try:
                b.log(metrics, step)
            except Exception as e:  # a tracker that fails never stops training; say so once
                kind = type(b).__name__
                if kind not in self._warned:
                    self._warned.add(kind)
                    log.warning("tracker %s failed to log (%s); carrying on without it", kind, e)

    def update(
        self, steps: list[dict[str, Any]], groups: list[dict[str, Any]], evals: list[dict[str, Any]]
    ) -> None:
        for line in steps[self._steps :]:
            self._log(step_scalars(line), int(line["step"]))
        self._steps = len(steps)
        b = self.batch_groups
        while (self._windows + 1) * b <= len(groups):
            window = groups[self._windows * b : (self._windows + 1) * b]
            self._windows += 1
            self._log(group_scalars(window), self._windows)
        for result in evals[self._evals :]:
            self._log(eval_scalars(result), int(result["step"]))
        self._evals = len(evals)
        for backend in self.backends:
            backend.flush()

    def close(self) -> None:
        for b in self.backends:
            try:
                b.close()
            except Exception as e:
                log.warning("tracker %s did not close cleanly: %s", type(b).__name__, e)
        self.backends = []

    def backfill(self) -> None:
        """Log a finished (or running) run folder's files as they stand."""
        from sgpo.common.jsonl import read_jsonl

        self.update(
            read_jsonl(self.run_dir / "metrics.jsonl"),
            read_jsonl(self.run_dir / "groups.jsonl"),
            read_jsonl(self.run_dir / "eval.jsonl"),
        )
