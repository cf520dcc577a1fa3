"""Learning-curve plots of a run folder: reward, held-out accuracy by difficulty, all-negative and colored fractions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sgpo.common.jsonl import read_jsonl


def eval_kind(samples: int, temperature: float) -> str:
    """How held-out accuracy was measured, for tables and plot titles: "greedy" or "avg@k, T=t"."""
    return "greedy" if temperature == 0 else f"avg@{samples}, T={temperature:g}"


def group_fractions(
    groups: list[dict[str, Any]], window: int
) -> tuple[list[int], list[float], list[float], list[float]]:
    """Rolling (per `window` groups) all-negative fraction, colored fraction and mean accuracy of sampled groups."""
    xs, neg, col, acc = [], [], [], []
    for end in range(window, len(groups) + 1, window):
        chunk = groups[end - window : end]
        xs.append(end)
        neg.append(sum(g["kind"] == "all_negative" for g in chunk) / window)
        col.append(sum(bool(g["colored"]) for g in chunk) / window)
        acc.append(sum(g["accuracy"] for g in chunk) / window)
    return xs, neg, col, acc


def plot_run(run_dir: Path, window: int = 16) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = read_jsonl(run_dir / "metrics.jsonl")
    evals = [e for e in read_jsonl(run_dir / "eval.jsonl") if "accuracy" in e and "step" in e]
    groups = read_jsonl(run_dir / "groups.jsonl")
    out: list[Path] = []

    fig, ax = plt.subplots(figsize=(6, 3.6))
    if steps:
        x = [s.get("step", i + 1) for i, s in enumerate(steps)]
        for key, label in (("reward_mean", "reward (mean)"), ("accuracy", "train accuracy")):
            if any(key in s for s in steps):
                ax.plot(x, [s.get(key, float("nan")) for s in steps], label=label)
    ax.set(title=f"Training reward — {run_dir.name}", xlabel="trainer step", ylabel="value")
    if ax.lines:
        ax.legend(loc="best")
    fig.tight_layout()
    out.append(run_dir / "reward.png")
    fig.savefig(out[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    if evals:
        levels = sorted({lv for e in evals for lv in e["accuracy"]}, key=lambda s: (len(s), s))
        x = [e["step"] for e in evals]
        for lv in levels:
            ax.plot(
                x, [e["accuracy"].get(lv, float("nan")) for e in evals], marker="o", ms=3, label=f"{lv} steps"
            )
        ax.plot(x, [e["overall"] for e in evals], color="black", lw=2, label="overall")
    last = evals[-1] if evals else {}
    kind = eval_kind(last.get("samples", 1), last.get("temperature", 0.0))  # runs before avg@k: greedy
    ax.set(
        title=f"Held-out accuracy ({kind}) by difficulty",
        xlabel="trainer step",
        ylabel="accuracy",
        ylim=(0, 1),
    )
    ax.legend(loc="best", fontsize=7, ncol=2)
    fig.tight_layout()
    out.append(run_dir / "accuracy.png")
    fig.savefig(out[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs, neg, col, acc = group_fractions(groups, window)
    if xs:
        ax.plot(xs, neg, label="all-negative groups")
        ax.plot(xs, col, label="colored groups")
        ax.plot(xs, acc, label="sample accuracy", ls="--")
    ax.set(title=f"Sampled groups (per {window})", xlabel="groups sampled", ylabel="fraction", ylim=(0, 1))
    if ax.lines:
        ax.legend(loc="best")
    fig.tight_layout()
    out.append(run_dir / "groups.png")
    fig.savefig(out[-1], dpi=110)
    plt.close(fig)
    return out
