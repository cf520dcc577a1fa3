"""Trackers log a run folder's trainer lines, group windows and evaluations; read back with each library's reader."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sgpo.launch.tracking import RunTracker, TrackingConfig, TrackingError, group_scalars

B = 2  # groups per trainer step
CONFIG = {"algo": {"algo": "sgpo", "group_size": 4}, "trainer": {"lr": 1e-4, "max_steps": 3}}


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    _write(
        run / "metrics.jsonl", [{"step": s, "time_unix": 1.0, "loss": 0.1 * s, "kl": 0.01} for s in (1, 2, 3)]
    )
    kinds = ["all_negative", "mixed", "all_negative", "all_negative", "mixed", "all_positive"]
    _write(
        run / "groups.jsonl",
        [
            {
                "kind": k,
                "colored": k == "all_negative",
                "accuracy": 0.25,
                "reward_mean": 0.3,
                "tokens": 40,
                "sampled": 4 * (i + 1),
                "uncolorable": i == 3,
            }
            for i, k in enumerate(kinds)
        ],
    )
    _write(
        run / "eval.jsonl",
        [
            {"step": s, "overall": 0.2 + 0.1 * s, "accuracy": {"3": 0.5, "4": 0.25}, "mean_tokens": 60.0}
            for s in (0, 3)
        ],
    )
    return run


def test_group_window_statistics() -> None:
    window = [
        {"kind": "all_negative", "colored": True, "reward_mean": 0.2, "tokens": 10, "sampled": 8},
        {
            "kind": "mixed",
            "colored": False,
            "reward_mean": 0.6,
            "tokens": 30,
            "sampled": 16,
            "judge_failed": 1,
            "truncated": 1,
            "completions": 4,
        },
    ]
    out = group_scalars(window)
    assert out["groups/all_negative_fraction"] == 0.5 and out["groups/colored_fraction"] == 0.5
    assert out["groups/reward_mean"] == pytest.approx(0.4) and out["groups/tokens_mean"] == 20
    assert out["groups/completions_sampled"] == 16
    assert out["groups/failed_judgement_fraction"] == 0.5
    assert out["groups/truncation_rate"] == 0.25
    assert "groups/uncolorable_fraction" not in out, "absent fields are not invented"


def test_tensorboard_events_read_back(run_dir: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = RunTracker(TrackingConfig(), run_dir, CONFIG, batch_groups=B)
    tracker.backfill()
    tracker.close()
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"train/loss", "train/kl", "groups/all_negative_fraction", "groups/colored_fraction"} <= set(
        scalars
    )
    assert {"eval/overall", "eval/level_3", "groups/uncolorable_fraction"} <= set(scalars)
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([0.1, 0.2, 0.3])
    neg = acc.Scalars("groups/all_negative_fraction")
    assert [(e.step, e.value) for e in neg] == [(1, 0.5), (2, 1.0), (3, 0.0)]
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("eval/overall")] == [(0, 0.2), (3, 0.5)]
    assert "hparams" in acc.PluginTagToContent("hparams") or acc.PluginTagToContent("hparams")
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "group_size = 4" in text


def test_update_logs_only_what_is_new_and_whole_windows(run_dir: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    groups = [json.loads(x) for x in (run_dir / "groups.jsonl").read_text().splitlines()]
    tracker = RunTracker(TrackingConfig(), run_dir, CONFIG, batch_groups=B)
    tracker.update([], groups[:3], [])  # window 2 is not complete
    tracker.update([], groups[:3], [])
    tracker.update([], groups, [])
    tracker.close()
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("groups/colored_fraction")] == [1, 2, 3]


def test_wandb_offline_run_files_read_back(run_dir: Path) -> None:
    pytest.importorskip("wandb", reason="wandb is not installed: pip install 'sgpo[wandb]'")
    from wandb.proto import wandb_internal_pb2

    cfg = TrackingConfig.from_table({"backends": ["wandb"], "wandb": {"mode": "offline", "project": "t"}})
    tracker = RunTracker(cfg, run_dir, CONFIG, batch_groups=B)
    tracker.backfill()
    tracker.close()
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wandb's core process may still be writing when finish() returns
        records = []
        for data in _wandb_records(run_file.read_bytes()):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(data)
            records.append(rec)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        time.sleep(0.2)
    history, config = [], {}
    for rec in records:
        if rec.WhichOneof("record_type") == "history":
            history.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            )
        elif rec.WhichOneof("record_type") in ("run", "config"):
            update = rec.run.config.update if rec.HasField("run") else rec.config.update
            config.update({i.key: json.loads(i.value_json) for i in update})
    assert config["algo"]["group_size"] == 4
    losses = [(h["trainer_step"], h["train/loss"]) for h in history if "train/loss" in h]
    assert losses == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)), (3, pytest.approx(0.3))]
    evals = [(h["trainer_step"], h["eval/level_4"]) for h in history if "eval/level_4" in h]
    assert evals == [(0, 0.25), (3, 0.25)]
    assert any("groups/all_negative_fraction" in h for h in history)


def _wandb_records(raw: bytes) -> list[bytes]:
    """The records of a W&B run file: a 7-byte header (":W&B", magic, version), then LevelDB's log format
    (32 KiB blocks; each chunk: crc32c, length, type FULL/FIRST/MIDDLE/LAST). wandb >= 0.19 reads them in
    its Go core only; the records themselves are parsed with wandb's own protobuf classes."""
    assert raw[:4] == b":W&B"
    block, pos, out, parts = 32768, 7, [], b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length = int.from_bytes(raw[pos + 4 : pos + 6], "little")
        kind = raw[pos + 6]
        if kind == 0 and length == 0:
            pos += left
            continue
        data = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            out.append(data)
        elif kind == 2:
            parts = data
        elif kind == 3:
            parts += data
        elif kind == 4:
            out.append(parts + data)
    return out


def test_mlflow_file_store_read_back(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="mlflow is not installed: pip install 'sgpo[mlflow]'")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the tracker sets it for its file store
    cfg = TrackingConfig.from_table({"backends": ["mlflow"]})
    tracker = RunTracker(cfg, run_dir, CONFIG, batch_groups=B)
    tracker.backfill()
    tracker.close()
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("sgpo")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["algo.group_size"] == "4"
    assert run.info.status == "FINISHED"
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted((m.step, round(m.value, 6)) for m in loss) == [(1, 0.1), (2, 0.2), (3, 0.3)]
    neg = client.get_metric_history(run.info.run_id, "groups/all_negative_fraction")
    assert sorted((m.step, m.value) for m in neg) == [(1, 0.5), (2, 1.0), (3, 0.0)]


def test_bad_tracking_tables_say_what_to_do() -> None:
    with pytest.raises(TrackingError, match="backends are"):
        TrackingConfig.from_table({"backends": ["neptune"]})
    with pytest.raises(TrackingError, match=r"tracking\.wandb\.mode"):
        TrackingConfig.from_table({"wandb": {"mode": "sometimes"}})
    with pytest.raises(TrackingError, match=r"tracking\.tensorbord"):
        TrackingConfig.from_table({"tensorbord": {}})
    with pytest.raises(TrackingError, match="must be a table"):
        TrackingConfig.from_table(["tensorboard"])


def test_the_command_line_overrides_the_tables_backends() -> None:
    from sgpo.launch.tracking import resolve_tracking

    table = {"backends": ["tensorboard"], "tensorboard": {"dir": "tb"}}
    assert resolve_tracking(table, ()).backends == ()
    assert resolve_tracking(table, None).tensorboard.dir == "tb"
    assert resolve_tracking(None, None).backends == ("tensorboard",)
    with pytest.raises(TrackingError, match="backends are"):
        resolve_tracking(table, ("comet",))
