"""The tuned study's plan, selection rule and report, on hand-made run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from sgpo.experiments.plan import Study
from sgpo.experiments.report import load_plans
from sgpo.experiments.schedule import write_plan
from sgpo.experiments.stats import judging_share
from sgpo.experiments.tune import TuneOptions, plan_final, plan_sweep, select_lrs, sweep_finals
from sgpo.experiments.tune_report import aggregate_tune, write_tune_report
from tests.unit.launch.runs import write_run


def _opts(out: Path, **kw: object) -> TuneOptions:
    base: dict[str, object] = {
        "out": out,
        "algos": ("sgpo", "grpo"),
        "lrs": (1e-4, 3e-4),
        "tune_seeds": (0, 1),
        "seeds": (0, 1, 2),
        "control_seeds": (0, 1),
        "steps": 4,
        "eval_every": 2,
    }
    return TuneOptions(**{**base, **kw})  # type: ignore[arg-type]


def test_sweep_runs_every_algo_lr_seed_on_validation(tmp_path: Path) -> None:
    sweep = plan_sweep(_opts(tmp_path, device="cuda"), tmp_path / "policy")
    assert [r.name for r in sweep.runs][:3] == [
        "val-sgpo-lr0.0001-s0",
        "val-sgpo-lr0.0001-s1",
        "val-sgpo-lr0.0003-s0",
    ]
    assert len(sweep.runs) == 8
    r = sweep.runs[2]
    argv = list(r.argv)
    assert argv[argv.index("--eval-split") + 1] == "validation"
    assert argv[argv.index("--max-sampled") + 1] == str(4 * 16 * 8)  # steps x completions per step
    assert "lr = 0.0003" in r.config and 'device = "cuda"' in r.config and r.lr == 3e-4


def test_selection_rule_best_mean_ties_to_smaller_lr_and_needs_every_seed() -> None:
    finals = {
        ("sgpo", 1e-4): [0.25, 0.27],
        ("sgpo", 3e-4): [0.28, 0.30],
        ("grpo", 1e-4): [0.26, 0.26],
        ("grpo", 3e-4): [0.25, 0.27],  # the same mean: the smaller lr wins
        ("dapo", 1e-4): [0.2],  # one seed of two: not eligible
        ("dapo", 3e-4): [0.1, 0.12],
    }
    sel = select_lrs(finals, ["sgpo", "grpo", "dapo", "drgrpo"], [3e-4, 1e-4], 2)
    assert sel["sgpo"]["lr"] == 3e-4 and sel["sgpo"]["mean"] == pytest.approx(0.29)
    assert sel["grpo"]["lr"] == 1e-4
    assert sel["dapo"]["lr"] == 3e-4 and sel["dapo"]["table"]["0.0001"]["n"] == 1
    assert sel["drgrpo"]["lr"] is None


def test_final_plan_controls_greedy_and_trl(tmp_path: Path) -> None:
    trl = tmp_path / "python"
    opts = _opts(tmp_path, trl_python=trl)
    sweep = plan_sweep(opts, tmp_path / "policy")
    val_trl = [r for r in sweep.runs if r.kind == "trl"]
    assert [r.name for r in val_trl][:2] == ["val-trl-lr0.0001-s0", "val-trl-lr0.0001-s1"] and len(
        val_trl
    ) == 4
    assert val_trl[0].argv[val_trl[0].argv.index("--eval-split") + 1] == "validation"
    sel = {"sgpo": {"lr": 3e-4}, "grpo": {"lr": 5e-4}, "trl": {"lr": 1e-4}}
    final = plan_final(opts, tmp_path / "policy", sel)
    names = [r.name for r in final.runs]
    assert {
        "sgpo-lr0.0003-s2",
        "grpo-lr0.0005-s0",
        "sgpo-lr0.0003-noise0.5-s1",
        "sgpo-lr0.0003-noise1-s0",
    } <= set(names)
    assert (
        "sgpo-lr0.0003-allinc-s1" in names and names.count("sgpo-lr0.0003-s0") == 1
    )  # p = 0 is the final run
    allinc = next(r for r in final.runs if r.name == "sgpo-lr0.0003-allinc-s0")
    assert 'color_scope = "all_incorrect"' in allinc.config and allinc.tag == "all_incorrect"
    noisy = next(r for r in final.runs if r.name == "sgpo-lr0.0003-noise1-s0")
    assert "noise = 1.0" in noisy.config
    trl_runs = [r for r in final.runs if r.kind == "trl"]
    assert [r.name for r in trl_runs] == [
        "trl-lr0.0001-s0",
        "trl-lr0.0001-s1",
        "trl-lr0.0001-s2",
    ]  # GRPO's lr
    assert trl_runs[0].program == (str(trl), "-m", "sgpo.cli")
    greedy = [r for r in final.runs if r.kind == "score"]
    assert len(greedy) == len(final.runs) - len(greedy)  # one per trained run, after it
    assert greedy[0].after == (greedy[0].name.removeprefix("greedy-"),)
    for r in final.runs:
        if r.kind == "train":
            assert r.argv[r.argv.index("--eval-split") + 1] == "test"


def _sweep_folders(out: Path, seed_step: float = 0.01, skip: str = "") -> Study:
    """The sweep's runs by hand (final validation accuracy by algo and lr, + seed_step x seed), all but `skip`."""
    sweep = plan_sweep(_opts(out), out / "policy")
    vals = {"sgpo": {1e-4: 0.26, 3e-4: 0.29}, "grpo": {1e-4: 0.27, 3e-4: 0.22}}
    for r in sweep.runs:
        assert r.lr is not None
        if r.name != skip:
            write_run(
                out / "runs" / r.name,
                r.algo,
                r.seed,
                [(0, 0.25), (4, vals[r.algo][r.lr] + seed_step * r.seed)],
            )
    write_plan(sweep)
    return sweep


def _study_folders(out: Path) -> None:
    """A finished tuned study: sweep, finals (3 seeds), controls, greedy scores, by hand."""
    opts = _opts(out)
    sweep = _sweep_folders(out)
    sel = select_lrs(sweep_finals(sweep), opts.algos, opts.lrs, 2)
    assert sel["sgpo"]["lr"] == 3e-4 and sel["grpo"]["lr"] == 1e-4
    final = plan_final(opts, out / "policy", sel)
    for r in final.runs:
        if r.kind == "score":
            folder = out / "runs" / r.name
            folder.mkdir(parents=True)
            (folder / "score.json").write_text(json.dumps({"overall": 0.5 if "sgpo" in r.name else 0.4}))
            (folder / "summary.json").write_text(json.dumps({"interrupted": False}))
            continue
        end = {"sgpo": 0.29, "grpo": 0.23}[r.algo] + 0.005 * r.seed - (0.05 if r.tag == "p=1" else 0.0)
        write_run(out / "runs" / r.name, r.algo, r.seed, [(0, 0.25), (2, 0.26), (4, end)])
        (out / "runs" / r.name / "experiment.json").write_text(json.dumps({"started": 0}))
    write_plan(final)


def test_report_intervals_controls_and_cost(tmp_path: Path) -> None:
    _study_folders(tmp_path)
    res = aggregate_tune(tmp_path)
    assert res["selection"] == {"sgpo": 3e-4, "grpo": 1e-4}
    assert res["sweep"]["validation_final"]["sgpo"]["0.0003"] == pytest.approx([0.29, 0.30])
    f = res["final"]
    assert f["sgpo"]["final"] == pytest.approx([0.29, 0.295, 0.30]) and f["sgpo"]["greedy"] == [0.5] * 3
    assert f["sgpo"]["final_ci"]["low"] <= 0.295 <= f["sgpo"]["final_ci"]["high"]
    d = res["differences"]["sgpo-grpo"]
    assert d["avg"]["estimate"] == pytest.approx(0.06) and d["avg"]["excludes_zero"]
    assert d["greedy"]["estimate"] == pytest.approx(0.1)
    c = res["controls"]
    assert set(c) == {"p=0", "p=0.5", "p=1", "all_incorrect"}
    assert c["p=1"]["final"] == pytest.approx([0.24, 0.245])
    assert c["p=1"]["minus_grpo"]["estimate"] == pytest.approx(0.2425 - 0.235)
    assert f["sgpo"]["cost"]["sampled"]["n"] == 0  # hand-made summaries carry no sampled_total
    assert len(f["sgpo"]["per_seed"]) == 3 and f["sgpo"]["per_seed"][0]["curve"][-1] == (4.0, 0.29)
    written = write_tune_report(tmp_path, Console(width=200, file=open("/dev/null", "w")))  # noqa: SIM115
    assert written["differences"]
    md = (tmp_path / "tune-tables.md").read_text()
    assert "| sgpo - grpo | +0.060 [" in md and "Selected in bold" in md
    for png in ("tune-final-accuracy", "tune-sweep", "tune-controls"):
        assert (tmp_path / f"{png}.png").stat().st_size > 5_000


def test_a_sweep_alone_reports_the_rules_selection(tmp_path: Path) -> None:
    """Before any final run the tables name the rate the final phase will take (it showed "—" there)."""
    _sweep_folders(tmp_path, seed_step=0.0, skip="val-sgpo-lr0.0003-s1")  # incomplete: 3e-4 is not eligible
    res = aggregate_tune(tmp_path)
    assert "tune" not in load_plans(tmp_path) and res["selection"] == {"sgpo": 1e-4, "grpo": 1e-4}
    write_tune_report(tmp_path, Console(width=200, file=open("/dev/null", "w")))  # noqa: SIM115
    md = (tmp_path / "tune-tables.md").read_text()
    assert "| sgpo | **0.260 (n=2)** | 0.290 (n=1) | 0.0001 |" in md, md


def test_judging_share_as_bench_computes_it() -> None:
    groups = [
        {"generate_s": 1.0, "verify_s": 0.5, "judge_s": 0.5, "t": 11.0, "colored": True},
        {"generate_s": 1.0, "verify_s": 0.5, "t": 12.0},
        {"generate_s": 1.0, "verify_s": 0.5, "judge_s": 1.0, "t": 30.0},  # after the last step
    ]
    s = judging_share(groups, [10.0, 20.0])
    assert s["judged"] == 2 and s["colored"] == 1
    assert s["rollout_share"] == pytest.approx(1.5 / 6.0)
    assert s["wall_share"] == pytest.approx(0.5 / 10.0)


def test_a_study_run_in_parts_keeps_every_part_in_its_plan(tmp_path: Path) -> None:
    """One session sweeps sgpo and grpo, the next dapo and drgrpo: the report reads all four."""
    write_plan(plan_sweep(_opts(tmp_path, algos=("sgpo", "grpo")), tmp_path / "policy"))
    write_plan(plan_sweep(_opts(tmp_path, algos=("dapo", "drgrpo")), tmp_path / "policy"))
    runs = json.loads((tmp_path / "experiment.json").read_text())["studies"]["tune-sweep"]["runs"]
    assert len(runs) == 16 and {r["algo"] for r in runs} == {"sgpo", "grpo", "dapo", "drgrpo"}
    write_plan(plan_sweep(_opts(tmp_path), tmp_path / "policy"))  # planned again whole: no duplicates
    runs = json.loads((tmp_path / "experiment.json").read_text())["studies"]["tune-sweep"]["runs"]
    assert len(runs) == 16
