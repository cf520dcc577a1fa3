"""The studies `sgpo experiment` knows, as data: what each compares, its defaults, how it is reported.

The planner, the scheduler and the report read a study's `design` and fields, never its name, so a new study
of an existing design is one more entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Design = Literal["compare", "replay", "sweep"]


@dataclass(frozen=True)
class StudyDef:
    name: str
    description: str
    design: Design
    """`compare`: algorithms x seeds, each run on the same budget of completions sampled; `replay`: groups
    recorded once from the initial policy (`sgpo record`), then algorithms x seeds train on that file;
    `sweep`: the `focus` algorithm over judge-noise levels x seeds, plus reference algorithms on the same
    budget."""
    algos: tuple[str, ...] = ()
    """The algorithms compared (default of --algos; a sweep runs `focus`)."""
    reference: tuple[str, ...] = ()
    """A sweep's baselines, drawn as reference lines (default of --reference)."""
    focus: str = "sgpo"
    """The algorithm whose learning speed is measured against `baseline`'s final accuracy."""
    baseline: str = "grpo"
    contrast: str | None = None
    """An algorithm compared with `focus` at equal completions sampled (a `compare` study)."""
    title: str = ""
    """The report's name for the study (default: its name)."""

    @property
    def label(self) -> str:
        return self.title or self.name


STUDIES: dict[str, StudyDef] = {
    s.name: s
    for s in (
        StudyDef(
            "online",
            "sgpo, grpo and dapo x seeds, on the same budget of completions sampled",
            "compare",
            algos=("sgpo", "grpo", "dapo"),
            contrast="dapo",
        ),
        StudyDef(
            "offline",
            "record groups once from the initial policy, then sgpo vs grpo x seeds for several epochs",
            "replay",
            algos=("sgpo", "grpo"),
        ),
        StudyDef(
            "noise",
            "sgpo with a judge whose first-error index is random for a fraction p of responses, plus grpo",
            "sweep",
            reference=("grpo",),
            title="Judge noise",
        ),
    )
}
# The order algorithms appear in tables and legends (others follow, alphabetically).
ALGO_ORDER = ("sgpo", "grpo", "drgrpo", "dapo")
ALGO_COLORS = {"sgpo": "tab:blue", "grpo": "tab:orange", "drgrpo": "tab:red", "dapo": "tab:green"}
