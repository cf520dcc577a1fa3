"""The aggregation math of `sgpo experiment`, on hand-made numbers and hand-made run folders."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from sgpo.experiments.report import aggregate
from sgpo.experiments.state import run_status
from sgpo.experiments.stats import (
    area_mean,
    band,
    common_grid,
    dropped_fraction,
    first_crossing,
    interp_at,
    load_run,
    mean_std,
    rolling_mean,
    sampled_by_step,
    target_metric,
)
from tests.unit.launch.runs import B, G, write_plan, write_run


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_mean_std_is_the_sample_std_and_none_for_one_seed() -> None:
    s = mean_std([0.2, 0.4, 0.6])
    assert s.mean == pytest.approx(0.4) and s.std == pytest.approx(0.2) and s.n == 3
    one = mean_std([0.7])
    assert one.mean == 0.7 and one.std is None and one.n == 1
    assert mean_std([]).n == 0 and mean_std([]).json()["mean"] is None


def test_interp_at_is_linear_inside_and_none_outside() -> None:
    pts = [(0.0, 0.0), (10.0, 0.5), (20.0, 1.0)]
    assert interp_at(pts, 5) == pytest.approx(0.25)
    assert interp_at(pts, 10) == 0.5
    assert interp_at(pts, 20) == 1.0
    assert interp_at(pts, -1) is None and interp_at(pts, 21) is None
    assert interp_at([(3.0, 0.4)], 3) == 0.4


def test_band_averages_every_seed_on_the_common_range_only() -> None:
    a = [(0.0, 0.0), (10.0, 0.5), (20.0, 1.0)]
    b = [(0.0, 0.2), (15.0, 0.5)]  # shorter, evaluated elsewhere
    assert common_grid([a, b]) == [0.0, 10.0, 15.0]
    out = band([a, b])
    assert out.x == [0.0, 10.0, 15.0] and out.n == 2
    # at 10: a = 0.5, b = 0.2 + 0.3 * 10/15 = 0.4; at 15: a = 0.75, b = 0.5
    assert out.mean == pytest.approx([0.1, 0.45, 0.625])
    assert out.std[1] == pytest.approx(statistics_stdev([0.5, 0.4]))
    # an explicit grid point beyond one seed is left out rather than averaged over fewer seeds
    assert band([a, b], grid=[5.0, 20.0]).x == [5.0]


def statistics_stdev(v: list[float]) -> float:
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def test_first_crossing_interpolates_between_the_bracketing_evaluations() -> None:
    pts = [(0.0, 0.1), (10.0, 0.3), (20.0, 0.5), (30.0, 0.45)]
    c = first_crossing(pts, 0.4)
    assert c.x == pytest.approx(15.0) and c.eval_x == 20.0
    assert first_crossing(pts, 0.5).x == pytest.approx(20.0)  # reaching it exactly counts
    assert first_crossing(pts, 0.05).x == 0.0  # already there at the start
    never = first_crossing(pts, 0.6)
    assert never.x is None and never.eval_x is None  # not reached: never extrapolated


def test_rolling_mean_dropped_fraction_and_area() -> None:
    assert rolling_mean([(1, 0.0), (2, 1.0), (3, 0.5)], 2) == [(1, 0.0), (2, 0.5), (3, 0.75)]
    # 4 groups x 2 completions per step; steps cost 8, 16, 16 completions -> 0 %, 50 %, 50 % dropped
    by_step = {0: 0, 1: 8, 2: 24, 3: 40}
    assert dropped_fraction(by_step, 4, 2, 1) == [(1.0, 0.0), (2.0, 0.5), (3.0, 0.5)]
    assert dropped_fraction(by_step, 4, 2, 2) == [(2.0, pytest.approx(1 - 16 / 24)), (3.0, 0.5)]
    assert area_mean([(0.0, 0.0), (10.0, 1.0)], 0, 10) == pytest.approx(0.5)
    assert area_mean([(0.0, 0.0), (10.0, 1.0)], 0, 5) == pytest.approx(0.25)
    assert area_mean([(0.0, 0.0), (10.0, 1.0)], 0, 11) is None


def test_sampled_comes_from_eval_then_groups_then_an_estimate(tmp_path: Path) -> None:
    accs = [(0, 0.1), (2, 0.2), (4, 0.3)]
    with_field = load_run(write_run(tmp_path / "a", "dapo", 0, accs, sampled=[0, 40, 90], group_cost=20))
    assert [e.sampled for e in with_field.evals] == [0, 40, 90] and with_field.sampled_source == "eval"
    # no `sampled` in eval.jsonl (older runs): the last group each step consumed says it
    from_groups = load_run(write_run(tmp_path / "b", "dapo", 0, accs, group_cost=20))
    assert [e.sampled for e in from_groups.evals] == [0, 40, 80] and from_groups.sampled_source == "groups"
    (tmp_path / "b" / "groups.jsonl").unlink()
    estimate = load_run(tmp_path / "b")
    assert [e.sampled for e in estimate.evals] == [0, 2 * B * G, 4 * B * G]
    assert estimate.sampled_source == "estimate"
    assert sampled_by_step([{"sampled": 10}] * 8, 4) == {0: 0, 1: 10, 2: 10}


def test_run_status(tmp_path: Path) -> None:
    assert run_status(tmp_path / "nothing") == "missing"
    assert run_status(write_run(tmp_path / "c", "sgpo", 0, [(0, 0.1)])) == "complete"
    assert run_status(write_run(tmp_path / "i", "sgpo", 0, [(0, 0.1)], interrupted=True)) == "interrupted"
    assert run_status(write_run(tmp_path / "x", "sgpo", 0, [(0, 0.1)], interrupted=None)) == "incomplete"


def _runs(tmp_path: Path, algo: str, curves: list[list[tuple[int, float]]], **kw: object) -> list:  # type: ignore[type-arg]
    return [load_run(write_run(tmp_path / f"{algo}-s{i}", algo, i, c, **kw)) for i, c in enumerate(curves)]  # type: ignore[arg-type]


def test_target_metric_ratio_to_grpo_steps(tmp_path: Path) -> None:
    # GRPO ends at 0.5 and 0.6 after 100 steps: threshold 0.55
    grpo = _runs(tmp_path, "grpo", [[(0, 0.1), (50, 0.3), (100, 0.5)], [(0, 0.1), (50, 0.4), (100, 0.6)]])
    # SGPO seed 0 crosses 0.55 half-way between 40 (0.5) and 60 (0.6): 50; seed 1 at 70 exactly
    sgpo = _runs(
        tmp_path,
        "sgpo",
        [[(0, 0.1), (40, 0.5), (60, 0.6), (100, 0.7)], [(0, 0.1), (50, 0.45), (70, 0.55), (100, 0.7)]],
    )
    t = target_metric(sgpo, grpo, "step")
    assert t["threshold"] == pytest.approx(0.55) and t["grpo_final_x"] == 100
    assert [p["x"] for p in t["per_seed"]] == pytest.approx([50.0, 70.0])
    assert [p["eval_x"] for p in t["per_seed"]] == [60, 70]
    assert t["mean_ratio"]["mean"] == pytest.approx(0.6) and t["mean_ratio"]["n"] == 2
    assert t["target_met"] is True and t["reached"] == 2 and not t["notes"]
    # GRPO's own mean curve first reaches its final mean at its last evaluation
    assert t["grpo_mean_curve_crossing_x"] == pytest.approx(100.0)
    # in completions: B x G per step for both (no dropped groups)
    tc = target_metric(sgpo, grpo, "sampled")
    assert tc["grpo_final_x"] == 100 * B * G
    assert tc["mean_ratio"]["mean"] == pytest.approx(0.6)


def test_target_metric_says_not_reached_instead_of_averaging_the_seeds_that_did(tmp_path: Path) -> None:
    grpo = _runs(tmp_path, "grpo", [[(0, 0.1), (100, 0.5)]])
    sgpo = _runs(tmp_path, "sgpo", [[(0, 0.1), (50, 0.6), (100, 0.6)], [(0, 0.1), (50, 0.3), (100, 0.45)]])
    t = target_metric(sgpo, grpo, "step")
    assert t["per_seed"][0]["ratio"] == pytest.approx((0.4 / 0.5 * 50) / 100)
    assert t["per_seed"][1]["x"] is None and t["per_seed"][1]["ratio"] is None
    assert t["mean_ratio"] is None and t["reached"] == 1 and t["n"] == 2 and t["target_met"] is False


def test_target_metric_flags_a_grpo_that_did_not_improve(tmp_path: Path) -> None:
    grpo = _runs(tmp_path, "grpo", [[(0, 0.4), (100, 0.3)]])
    sgpo = _runs(tmp_path, "sgpo", [[(0, 0.4), (100, 0.2)]])
    t = target_metric(sgpo, grpo, "step")
    assert t["per_seed"][0]["x"] == 0.0 and t["notes"] and t["target_met"] is False


def test_aggregate_writes_results_tables_and_small_plots(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    lv = {"5": [0.0, 0.1, 0.2], "6": [0.0, 0.05, 0.1]}
    for s, final in enumerate((0.5, 0.6)):
        write_run(
            out / "runs" / f"grpo-s{s}",
            "grpo",
            s,
            [(0, 0.1), (5, 0.3), (10, final)],
            levels=lv,
            sampled=[0, 5 * B * G, 10 * B * G],
            all_negative=0.7,
        )
        write_run(
            out / "runs" / f"sgpo-s{s}",
            "sgpo",
            s,
            [(0, 0.1), (5, 0.6), (10, 0.7)],
            levels=lv,
            sampled=[0, 5 * B * G, 10 * B * G],
            all_negative=0.6,
        )
    # dapo spends twice the completions per step and so stops at step 5 on the same budget
    write_run(
        out / "runs" / "dapo-s0",
        "dapo",
        0,
        [(0, 0.1), (5, 0.4)],
        levels={"5": [0, 0.1], "6": [0, 0]},
        sampled=[0, 10 * B * G],
        group_cost=2 * B * G,
        all_negative=0.0,
    )
    write_run(out / "runs" / "dapo-s1", "dapo", 1, [(0, 0.1)], interrupted=True)
    # noise study: p = 0 is the plain sgpo run; p = 1 falls to grpo's level
    for s in (0, 1):
        write_run(out / "runs" / f"sgpo-noise1-s{s}", "sgpo", s, [(0, 0.1), (10, 0.5)], noise=1.0)
    online = [{"name": f"{a}-s{s}", "algo": a, "seed": s} for a in ("sgpo", "grpo", "dapo") for s in (0, 1)]
    noise = [{"name": f"sgpo-s{s}", "algo": "sgpo", "seed": s, "noise": 0.0} for s in (0, 1)]
    noise += [{"name": f"sgpo-noise1-s{s}", "algo": "sgpo", "seed": s, "noise": 1.0} for s in (0, 1)]
    noise += [{"name": f"grpo-s{s}", "algo": "grpo", "seed": s} for s in (0, 1)]
    write_plan(out, {"online": online, "noise": noise})

    aggregate(out, quiet(), levels=["5", "6"])

    res = json.loads((out / "results.json").read_text())
    on = res["studies"]["online"]
    assert on["complete"] == 5 and [m["name"] for m in on["missing"]] == ["dapo-s1"]
    assert on["missing"][0]["status"] == "interrupted"
    assert on["final"]["grpo"]["overall"]["mean"] == pytest.approx(0.55)
    assert on["final"]["dapo"]["overall"]["n"] == 1 and on["final"]["dapo"]["overall"]["std"] is None
    assert on["final"]["sgpo"]["levels"]["5"]["mean"] == pytest.approx(0.2)
    # sgpo crosses 0.55 between step 0 (0.1) and 5 (0.6): 4.5 steps, ratio 0.45 of grpo's 10
    assert on["target"]["step"]["mean_ratio"]["mean"] == pytest.approx(0.45)
    # matched budgets default to quarters of the least any run sampled (dapo's 10 x B x G = 80)
    assert on["matched_budgets"]["budgets"] == [20, 40, 60, 80]
    # at 40 completions: sgpo at step 5 (0.6); dapo half-way to step 5 (0.25)
    vs = {b["sampled"]: b for b in on["sgpo_vs_dapo"]["at_budgets"]}
    assert vs[40]["sgpo"] == pytest.approx(0.6) and vs[40]["dapo"] == pytest.approx(0.25)
    assert on["all_negative"]["grpo"]["mean"][0] == pytest.approx(0.7)
    assert on["all_negative"]["dapo"]["kind"] == "dropped_fraction"
    assert on["all_negative"]["dapo"]["mean"][-1] == pytest.approx(0.5)
    nz = res["studies"]["noise"]
    assert nz["by_noise"]["0"]["overall"]["mean"] == pytest.approx(0.7)
    assert nz["by_noise"]["1"]["overall"]["mean"] == pytest.approx(0.5)
    assert nz["reference"]["grpo"]["overall"]["mean"] == pytest.approx(0.55)
    assert nz["by_noise"]["1"]["target_steps"]["mean_ratio"] is None  # 0.5 never reaches 0.55

    md = (out / "tables.md").read_text()
    assert "dapo-s1 (interrupted)" in md and "not reached" in md and "sgpo p=1" in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "noise-accuracy-vs-step.png",
        "noise-final-accuracy.png",
        "online-accuracy-vs-sampled.png",
        "online-accuracy-vs-step.png",
        "online-all-negative.png",
    ]
    for p in out.glob("*.png"):
        assert 5_000 < p.stat().st_size < 150_000, p
