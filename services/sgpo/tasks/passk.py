"""Evaluation metrics of `sgpo eval`, pure and light: avg@k and the unbiased pass@k estimator.

With n samples of a problem of which c are correct:

- avg@n = c / n, averaged over problems (the mean accuracy of one sample);
- pass@k = 1 - C(n - c, k) / C(n, k) for k <= n (Chen et al. 2021, "Evaluating Large Language Models Trained
  on Code", eq. 1), averaged over problems: the chance that at least one of k samples drawn without
  replacement from the n is correct. It is computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k / i), which
  never forms the huge binomials (the paper's numerically stable form).

Unscorable samples (the verifier failed, not the model) are not correct; `compute_benchmark_metrics` counts
them separately so a report can show the bracket [avg@n, avg@n + unscorable_rate] the true accuracy lies in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sgpo.core.errors import InvalidInputError


def compute_pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` correct among `n` samples (needs 0 <= c <= n, 1 <= k <= n)."""
    if n < 1:
        raise InvalidInputError("n", f"needs at least 1 sample; got {n}")
    if not 0 <= c <= n:
        raise InvalidInputError("c", f"correct samples must be in 0..n={n}; got {c}")
    if not 1 <= k <= n:
        raise InvalidInputError(
            "k", f"pass@k needs 1 <= k <= n={n} samples; got k={k}: sample more or lower k"
        )
    if n - c < k:
        return 1.0  # every draw of k samples contains a correct one
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def compute_avg_at_k(n: int, c: int) -> float:
    """Mean accuracy of the `n` samples of one problem (`c` correct)."""
    if n < 1:
        raise InvalidInputError("n", f"needs at least 1 sample; got {n}")
    if not 0 <= c <= n:
        raise InvalidInputError("c", f"correct samples must be in 0..n={n}; got {c}")
    return c / n


@dataclass(frozen=True)
class ProblemCounts:
    """One problem's samples: how many were drawn, correct, and unscorable (neither correct nor wrong)."""

    n: int
    correct: int
    unscorable: int = 0


def compute_benchmark_metrics(problems: Sequence[ProblemCounts], ks: Sequence[int]) -> dict[str, float | int]:
    """avg@n, pass@k for each k in `ks`, and the unscorable counts, averaged over `problems` (all with the same n).

    Keys: `problems`, `samples`, `avg@{n}`, `pass@{k}` per k, `unscorable` (samples), `unscorable_rate`.
    An empty benchmark reports zeros.
    """
    if not problems:
        return {"problems": 0, "samples": 0, "unscorable": 0, "unscorable_rate": 0.0}
    n = problems[0].n
    for i, p in enumerate(problems):
        if p.n != n:
            raise InvalidInputError(f"problems[{i}].n", f"every problem needs the same n={n}; got {p.n}")
        if not 0 <= p.unscorable <= p.n - p.correct:
            raise InvalidInputError(
                f"problems[{i}].unscorable", f"must be in 0..n-correct={p.n - p.correct}; got {p.unscorable}"
            )
    out: dict[str, float | int] = {"problems": len(problems), "samples": n * len(problems)}
    out[f"avg@{n}"] = sum(compute_avg_at_k(p.n, p.correct) for p in problems) / len(problems)
    for k in sorted(set(ks)):
        out[f"pass@{k}"] = sum(compute_pass_at_k(p.n, p.correct, k) for p in problems) / len(problems)
    unscorable = sum(p.unscorable for p in problems)
    out["unscorable"] = unscorable
    out["unscorable_rate"] = unscorable / (n * len(problems))
    return out
