"""`sgpo experiment`: the exact commands of each study, and the runner's resumability.

The runner tests run a stand-in for `sgpo train` as a real subprocess (a small script that writes a run
folder the way `sgpo train` does and records how it was called), so they check the runner's own logic in a
second: which runs are skipped, rerun or reported failed. tests/e2e/test_experiment.py runs the real thing.
"""

from __future__ import annotations

import io
import json
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from sgpo.cli import build_parser, main, options
from sgpo.experiments.plan import Study, StudyOptions, plan_study
from sgpo.experiments.schedule import Runner
from sgpo.experiments.state import classify, record_status
from tests.unit.launch.runs import write_run

POLICY = Path("/policies/tiny")

FAKE_TRAIN = r"""
import json, os, signal, sys, time
from pathlib import Path

argv = sys.argv[1:]
opt = lambda name: argv[argv.index(name) + 1] if name in argv else None
run_dir = Path(opt("--run-dir"))
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps({"argv": argv, "redis_env": "SGPO_REDIS_URL" in os.environ}) + "\n")
print("fake sgpo", argv[0], run_dir.name, flush=True)
if argv[0] == "record":
    Path(opt("--out")).write_text("{}\n" * int(opt("--prompts")))
    sys.exit(0)
if os.environ.get("FAKE_SLOW"):  # stops on SIGTERM the way `sgpo train` does: summary says interrupted
    def stop(*_):
        (run_dir / "summary.json").write_text(json.dumps({"interrupted": True}))
        Path(os.environ["FAKE_SLOW"]).write_text("stopped by SIGTERM")
        sys.exit(130)
    signal.signal(signal.SIGTERM, stop)
    (run_dir / "run.toml").write_text("")
    time.sleep(60)
    sys.exit(1)
if (run_dir / "run.toml").exists():
    print("already holds a run"); sys.exit(2)
fail = os.environ.get("FAKE_FAIL")
if fail and fail in run_dir.name:
    print("Traceback: something broke"); sys.exit(3)
steps = int(opt("--steps"))
(run_dir / "run.toml").write_text(
    f'[algo]\nalgo = "{opt("--algo")}"\ngroup_size = 2\n[trainer]\nbatch_groups = 4\nseed = {opt("--seed")}\n'
)
with open(run_dir / "eval.jsonl", "w") as f:
    for step, acc in ((0, 0.1), (steps, 0.5)):
        f.write(json.dumps({"step": step, "overall": acc, "accuracy": {"5": acc}, "sampled": step * 8}) + "\n")
(run_dir / "metrics.jsonl").write_text(
    "".join(json.dumps({"step": s, "frac_all_negative": 0.5}) + "\n" for s in range(1, steps + 1))
)
(run_dir / "summary.json").write_text(json.dumps({"interrupted": False, "steps": steps}))
"""


def parse(*argv: str) -> StudyOptions:
    """The typed options `sgpo experiment` gives the planner for this command line."""
    return options(StudyOptions, build_parser().parse_args(["experiment", *argv]))


def commands(study: str, out: Path, *extra: str) -> list[str]:
    return [r.command() for r in plan_study(parse(study, "--out", str(out), *extra), POLICY).runs]


def test_online_plan_is_algos_x_seeds_on_one_budget(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    cmds = commands("online", out, "--max-sampled", "6400", "--eval-every", "5")
    common = f"--steps 50 --eval-every 5 --max-sampled 6400 --policy {POLICY}"
    assert cmds == [
        f"sgpo train --preset tiny --algo {a} --seed {s} {common} --run-dir {out}/runs/{a}-s{s}"
        for a in ("sgpo", "grpo", "dapo")
        for s in (0, 1, 2)
    ]
    # the step cap defaults to budget / (16 groups x 8 completions): no algorithm reaches it before the budget
    assert "--steps 50" in cmds[0]
    # no budget: --steps only
    cmds = commands("online", out, "--max-sampled", "0", "--steps", "7", "--algos", "grpo", "--seeds", "4")
    assert cmds == [
        f"sgpo train --preset tiny --algo grpo --seed 4 --steps 7 --eval-every 10 --policy {POLICY} "
        f"--run-dir {out}/runs/grpo-s4"
    ]


def test_noise_plan_shares_p0_and_grpo_with_the_online_study(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    study = plan_study(parse("noise", "--out", str(out), "--seeds", "0,1", "--noise", "0,0.25,1"), POLICY)
    assert [r.name for r in study.runs] == [
        "sgpo-s0",
        "sgpo-s1",
        "sgpo-noise0.25-s0",
        "sgpo-noise0.25-s1",
        "sgpo-noise1-s0",
        "sgpo-noise1-s1",
        "grpo-s0",
        "grpo-s1",
    ]
    online = {r.name: r for r in plan_study(parse("online", "--out", str(out)), POLICY).runs}
    for r in study.runs:
        if r.noise == 0:  # the same command as the online study's run: it runs once
            assert r.argv == online[r.name].argv and r.config is None
    noisy = study.runs[2]
    assert noisy.config is not None and "noise = 0.25" in noisy.config and "noise_seed = 0" in noisy.config
    assert f"--config {out}/configs/sgpo-noise0.25-s0.toml" in noisy.command()


def test_train_levels_reach_every_run_and_offline_has_none(tmp_path: Path) -> None:
    cmds = commands("online", tmp_path / "e", "--train-levels", "5,6", "--seeds", "0", "--algos", "sgpo,grpo")
    assert len(cmds) == 2 and all(" --levels 5,6 --run-dir " in c for c in cmds)
    assert all("--levels" not in c for c in commands("noise", tmp_path / "e", "--seeds", "0"))
    with pytest.raises(SystemExit):
        parse("offline", "--out", str(tmp_path / "e"), "--train-levels", "5,6")


def test_evaluation_options_reach_every_run_and_the_study_params(tmp_path: Path) -> None:
    for study in ("online", "offline", "noise"):
        args = parse(
            study, "--out", str(tmp_path / study), "--eval-samples", "8", "--eval-temperature", "0.6"
        )
        plan = plan_study(args, POLICY)
        assert plan.params["eval_samples"] == 8 and plan.params["eval_temperature"] == 0.6
        for r in plan.runs:
            argv = list(r.argv)
            assert argv[argv.index("--eval-samples") + 1] == "8", r.argv
            assert argv[argv.index("--eval-temperature") + 1] == "0.6", r.argv
    default = plan_study(parse("online", "--out", str(tmp_path / "d")), POLICY)
    assert all("--eval-samples" not in r.argv for r in default.runs)  # the preset's evaluation


def test_extra_config_is_merged_into_every_run(tmp_path: Path) -> None:
    extra = tmp_path / "lr.toml"
    extra.write_text("[trainer]\nlr = 0.001\n")
    study = plan_study(
        parse(
            "noise", "--out", str(tmp_path / "e"), "--config", str(extra), "--noise", "0,0.5", "--seeds", "0"
        ),
        POLICY,
    )
    assert all(r.config and "lr = 0.001" in r.config for r in study.runs)
    assert "noise = 0.5" in study.runs[1].config  # type: ignore[operator]


def test_offline_plan_records_once_then_replays_exact_epochs(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    study = plan_study(
        parse("offline", "--out", str(out), "--prompts", "64", "--epochs", "3", "--seeds", "0,1"), POLICY
    )
    assert study.record is not None
    rec = f"{out}/offline-record/groups.jsonl"
    assert study.record.command() == (
        f"sgpo record --preset tiny --out {rec} --prompts 64 --seed 0 --policy {POLICY} "
        f"--run-dir {out}/offline-record/record.d"
    )
    # 3 epochs x 64 groups / 16 per step = 12 steps; the replay loops and the trainer stops at its cap
    assert [r.command() for r in study.runs] == [
        f"sgpo train --preset tiny --algo {a} --seed {s} --steps 12 --eval-every 10 --replay {rec} --epochs 0 "
        f"--policy {POLICY} --run-dir {out}/runs/offline-{a}-s{s}"
        for a in ("sgpo", "grpo")
        for s in (0, 1)
    ]


def test_dry_run_prints_the_commands_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exp"
    code = main(
        [
            "experiment",
            "online",
            "--out",
            str(out),
            "--algos",
            "sgpo,grpo",
            "--seeds",
            "0",
            "--dry-run",
            "--policy",
            str(POLICY),
        ]
    )
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sgpo ")]
    assert lines == commands("online", out, "--algos", "sgpo,grpo", "--seeds", "0", "--policy", str(POLICY))
    assert len(lines) == 2 and all(shlex.split(line)[1] == "train" for line in lines)
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["online", "--max-sampled", "0"],  # no budget needs a step cap
        ["online", "--max-sampled", "-5"],
        ["online", "--eval-every", "0"],
        ["online", "--eval-samples", "0"],
        ["noise", "--eval-temperature", "-1"],
        ["offline", "--epochs", "0"],
    ],
)
def test_bad_options_fail_before_running_anything(tmp_path: Path, argv: list[str]) -> None:
    assert main(["experiment", *argv[:1], "--out", str(tmp_path / "e"), *argv[1:], "--dry-run"]) == 2


# -- the runner, with a stand-in for `sgpo train` ---------------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[tuple[str, ...], Path]:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("SGPO_REDIS_URL", "redis://127.0.0.1:1/0")  # must not reach the runs
    return (sys.executable, str(script)), calls


def called(calls: Path) -> list[str]:
    if not calls.exists():
        return []
    return [Path(json.loads(line)["argv"][-1]).name for line in calls.read_text().splitlines()]


def online_study(out: Path) -> Study:
    args = parse("online", "--out", str(out), "--algos", "sgpo,grpo", "--seeds", "0", "--max-sampled", "0")
    return plan_study(replace(args, steps=3), POLICY)


def mark_done(study: Study, name: str, interrupted: bool | None = False) -> Path:
    spec = next(r for r in study.runs if r.name == name)
    folder = study.out / "runs" / name
    write_run(folder, spec.algo, spec.seed, [(0, 0.1), (3, 0.4)], interrupted=interrupted)
    (folder / "experiment.json").write_text(json.dumps(spec.identity()))
    return folder


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_runner_skips_complete_runs_and_reruns_an_interrupted_one(
    tmp_path: Path, fake: tuple[tuple[str, ...], Path]
) -> None:
    sgpo, calls = fake
    out = tmp_path / "exp"
    study = online_study(out)
    mark_done(study, "sgpo-s0")
    mark_done(study, "grpo-s0", interrupted=True)
    assert classify(study) == {"sgpo-s0": "done", "grpo-s0": "todo"}

    assert Runner(study, quiet(), sgpo=sgpo, poll_s=0.05).execute() == 0
    assert called(calls) == ["grpo-s0"]
    assert not any(json.loads(line)["redis_env"] for line in calls.read_text().splitlines())
    # the interrupted attempt is kept for diagnosis, the new one is complete, with its command and log
    attempts = list((out / "attempts").iterdir())
    assert len(attempts) == 1 and attempts[0].name.startswith("grpo-s0-")
    assert json.loads((attempts[0] / "summary.json").read_text())["interrupted"] is True
    ident = json.loads((out / "runs" / "grpo-s0" / "experiment.json").read_text())
    assert ident["argv"][0] == "train" and ident["argv"][-1] == str(out / "runs" / "grpo-s0") and ident["pid"]
    assert "fake sgpo train grpo-s0" in (out / "runs" / "grpo-s0" / "train.log").read_text()
    plan = json.loads((out / "experiment.json").read_text())
    assert [r["name"] for r in plan["studies"]["online"]["runs"]] == ["sgpo-s0", "grpo-s0"]

    # invoked again: everything is complete, nothing runs
    assert Runner(study, quiet(), sgpo=sgpo, poll_s=0.05).execute() == 0
    assert called(calls) == ["grpo-s0"]


def test_runner_reruns_a_crashed_run_without_summary(
    tmp_path: Path, fake: tuple[tuple[str, ...], Path]
) -> None:
    sgpo, calls = fake
    study = online_study(tmp_path / "exp")
    mark_done(study, "sgpo-s0", interrupted=None)  # killed: run.toml but no summary.json
    mark_done(study, "grpo-s0")
    assert Runner(study, quiet(), sgpo=sgpo, poll_s=0.05).execute() == 0
    assert called(calls) == ["sgpo-s0"]


def test_a_failed_run_is_reported_and_the_study_goes_on(
    tmp_path: Path, fake: tuple[tuple[str, ...], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sgpo, calls = fake
    monkeypatch.setenv("FAKE_FAIL", "sgpo-s0")
    out = tmp_path / "exp"
    study = online_study(out)
    runner = Runner(study, quiet(), sgpo=sgpo, poll_s=0.05)
    assert runner.execute() == 1
    assert called(calls) == ["sgpo-s0", "grpo-s0"]
    assert runner.failed == [("sgpo-s0", str(out / "runs" / "sgpo-s0" / "train.log"))]
    assert "something broke" in (out / "runs" / "sgpo-s0" / "train.log").read_text()
    from sgpo.experiments.report import aggregate

    res = aggregate(out, quiet(), levels=["5"], plots=False)
    online = res["studies"]["online"]
    assert [m["name"] for m in online["missing"]] == ["sgpo-s0"] and online["missing"][0][
        "status"
    ] == "incomplete"
    assert online["final"]["grpo"]["overall"]["mean"] == pytest.approx(0.5)
    # next time only the failed run is redone
    monkeypatch.delenv("FAKE_FAIL")
    assert Runner(study, quiet(), sgpo=sgpo, poll_s=0.05).execute() == 0
    assert called(calls) == ["sgpo-s0", "grpo-s0", "sgpo-s0"]


def test_a_complete_run_made_by_another_command_stops_the_study(
    tmp_path: Path, fake: tuple[tuple[str, ...], Path]
) -> None:
    sgpo, calls = fake
    out = tmp_path / "exp"
    study = online_study(out)
    folder = mark_done(study, "sgpo-s0")
    ident = json.loads((folder / "experiment.json").read_text())
    ident["argv"] = [a if a != "3" else "99" for a in ident["argv"]]  # made with --steps 99
    (folder / "experiment.json").write_text(json.dumps(ident))
    assert "different command" in classify(study)["sgpo-s0"]
    assert Runner(study, quiet(), sgpo=sgpo, poll_s=0.05).execute() == 2
    assert called(calls) == []


def test_offline_records_once_and_refuses_runs_trained_on_a_lost_recording(
    tmp_path: Path, fake: tuple[tuple[str, ...], Path]
) -> None:
    sgpo, calls = fake
    out = tmp_path / "exp"
    args = parse("offline", "--out", str(out), "--seeds", "0", "--prompts", "16", "--epochs", "2")
    study = plan_study(args, POLICY)
    assert record_status(study, classify(study)) == "todo"
    assert Runner(study, quiet(), sgpo=sgpo, poll_s=0.05).execute() == 0
    assert called(calls) == ["record.d", "offline-sgpo-s0", "offline-grpo-s0"]
    assert (out / "offline-record" / "groups.jsonl").read_text().count("\n") == 16
    assert json.loads((out / "offline-record" / "record.json").read_text())["argv"][0] == "record"
    # again: recorded and trained, nothing runs
    assert Runner(study, quiet(), sgpo=sgpo, poll_s=0.05).execute() == 0
    assert len(called(calls)) == 3
    # the recording is lost: recording anew would put the complete runs on a different file
    (out / "offline-record" / "record.json").unlink()
    assert "trained on a recording" in record_status(study, classify(study))
    assert Runner(study, quiet(), sgpo=sgpo, poll_s=0.05).execute() == 2
    assert len(called(calls)) == 3


def test_sigterm_stops_the_current_run_cleanly_and_the_next_invocation_redoes_it(
    tmp_path: Path, fake: tuple[tuple[str, ...], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sgpo, _ = fake
    stopped = tmp_path / "stopped"
    monkeypatch.setenv("FAKE_SLOW", str(stopped))
    out = tmp_path / "exp"
    script = (
        "import io, sys\n"
        "from rich.console import Console\n"
        "from sgpo.cli import build_parser, options\n"
        "from sgpo.experiments.plan import StudyOptions, plan_study\n"
        "from sgpo.experiments.schedule import Runner\n"
        f"args = build_parser().parse_args(['experiment', 'online', '--out', {str(out)!r}, '--algos', 'sgpo',"
        " '--seeds', '0', '--max-sampled', '0', '--steps', '3'])\n"
        f"study = plan_study(options(StudyOptions, args), __import__('pathlib').Path({str(POLICY)!r}))\n"
        f"sys.exit(Runner(study, Console(), sgpo={sgpo!r}, poll_s=0.05).execute())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 30
    while not (out / "runs" / "sgpo-s0" / "run.toml").exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, output
    assert stopped.read_text() == "stopped by SIGTERM"  # the run got one SIGTERM and stopped itself
    assert "run the same command again" in output
    pid = json.loads((out / "runs" / "sgpo-s0" / "experiment.json").read_text())["pid"]
    assert not Path(f"/proc/{pid}").exists()
    study = online_study(out)
    assert classify(study)["sgpo-s0"] == "todo"  # interrupted: redone next time


def test_a_stalled_run_is_stopped_reported_and_the_study_goes_on(
    tmp_path: Path, fake: tuple[tuple[str, ...], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sgpo, calls = fake
    stopped = tmp_path / "stopped"
    monkeypatch.setenv("FAKE_SLOW", str(stopped))  # writes run.toml, then nothing for 60 s
    out = tmp_path / "exp"
    runner = Runner(online_study(out), quiet(), sgpo=sgpo, poll_s=0.05, stall_timeout=1.0)
    t0 = time.monotonic()
    assert runner.execute() == 1
    assert time.monotonic() - t0 < 20
    assert called(calls) == ["sgpo-s0", "grpo-s0"]  # both tried, each stopped after 1 s of silence
    assert [name for name, _ in runner.failed] == ["sgpo-s0", "grpo-s0"]
    assert stopped.read_text() == "stopped by SIGTERM"


def test_a_repeated_seed_or_algorithm_is_one_run(tmp_path: Path) -> None:
    study = plan_study(
        parse("online", "--out", str(tmp_path), "--seeds", "0,0,1", "--algos", "grpo,grpo"), POLICY
    )
    assert [r.name for r in study.runs] == ["grpo-s0", "grpo-s1"]
