"""The synthetic task: multi-step arithmetic chains with reference step-by-step solutions.

A problem reads "Start with 7. Add 5. Multiply by 3."; its solution has one `a op b = c` claim per step
("Step 1: 7 + 5 = 12\\nStep 2: 12 * 3 = 36\\nAnswer: 36"), the format the judge's `step_header` splitter and
the `symbolic` backend read, and a final `Answer: N` line the verifier reads. Difficulty is the number of
steps (and the operand range). Every generator is seeded: the same spec and seed give the same problems.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from sgpo.core.errors import InvalidInputError

Op = Literal["+", "-", "*"]
OPS: tuple[Op, ...] = ("+", "-", "*")
_WORDS: dict[Op, str] = {"+": "Add", "-": "Subtract", "*": "Multiply by"}


def format_prompt(problem: str) -> str:
    """The exact text the policy is fed for `problem` (the tiny policy is trained on this format)."""
    return f"{problem}\n"


@dataclass(frozen=True)
class ArithSpec:
    """How problems are drawn: operations, operand range, the range every intermediate value stays in."""

    ops: tuple[Op, ...] = ("+", "-")
    """Operations a step may use."""
    operand_min: int = 1
    """Smallest operand of a step."""
    operand_max: int = 9
    """Largest operand of a step (difficulty: larger operands are harder)."""
    start_min: int = 1
    """Smallest starting value."""
    start_max: int = 99
    """Largest starting value."""
    value_max: int = 99
    """Every intermediate value stays in 0..value_max."""

    def __post_init__(self) -> None:
        if not self.ops:
            raise InvalidInputError("ops", "needs at least one of '+', '-', '*'")
        bad = [o for o in self.ops if o not in OPS]
        if bad:
            raise InvalidInputError("ops", f"unknown operation(s) {bad}; use '+', '-' or '*'")
        if not 0 <= self.operand_min <= self.operand_max:
            raise InvalidInputError(
                "operand_min",
                f"needs 0 <= operand_min <= operand_max; got {self.operand_min}..{self.operand_max}",
            )
        if not 0 <= self.start_min <= self.start_max <= self.value_max:
            raise InvalidInputError(
                "start_max",
                f"needs 0 <= start_min <= start_max <= value_max; got {self.start_min}..{self.start_max} "
                f"with value_max {self.value_max}",
            )


@dataclass(frozen=True)
class ArithProblem:
    """One problem in the fields the real datasets use (`problem`, `answer`, `solution`) plus its difficulty."""

    problem: str
    answer: str
    solution: str
    steps: int
    unique_id: str = ""
    claims: tuple[tuple[int, str, int, int], ...] = field(default=(), repr=False, compare=False)
    """(a, op, b, c) per step; not written to JSONL (the solution text carries it)."""

    def to_record(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("claims")
        return d


def _apply(a: int, op: Op, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def generate_problem(rng: random.Random, steps: int, spec: ArithSpec = ArithSpec()) -> ArithProblem:
    """One problem of `steps` steps drawn with `rng`; every intermediate value stays in 0..value_max."""
    if steps < 1:
        raise InvalidInputError("steps", f"needs at least 1 step; got {steps}")
    value = rng.randint(spec.start_min, spec.start_max)
    sentences, lines, claims = [f"Start with {value}."], [], []
    operands = range(spec.operand_min, spec.operand_max + 1)
    for k in range(1, steps + 1):
        choices = [
            (op, b) for op in spec.ops for b in operands if 0 <= _apply(value, op, b) <= spec.value_max
        ]
        if not choices:
            raise InvalidInputError(
                "ops", f"no operation keeps {value} within 0..{spec.value_max}; widen the spec"
            )
        op, b = rng.choice(choices)
        new = _apply(value, op, b)
        sentences.append(f"{_WORDS[op]} {b}.")
        lines.append(f"Step {k}: {value} {op} {b} = {new}")
        claims.append((value, op, b, new))
        value = new
    lines.append(f"Answer: {value}")
    return ArithProblem(
        problem=" ".join(sentences),
        answer=str(value),
        solution="\n".join(lines),
        steps=steps,
        claims=tuple(claims),
    )


def sloppy_solution(problem: ArithProblem, rng: random.Random, slip_prob: float) -> str:
    """`problem`'s worked solution as a sloppy solver writes it: each step's result is off by 1 or 2 with
    probability `slip_prob`, and later steps carry on, correctly, from the slipped value (so the first slip is
    the first wrong step, and the final answer is wrong unless later slips cancel it). `slip_prob` 0 gives
    `problem.solution`."""
    if not problem.claims:
        raise InvalidInputError("problem", "has no step claims (read from JSONL?); generate it instead")
    if not 0.0 <= slip_prob <= 1.0:
        raise InvalidInputError("slip_prob", f"must be in [0, 1]; got {slip_prob}")
    value, lines = problem.claims[0][0], []
    for k, (_, op, b, _) in enumerate(problem.claims, 1):
        new = _apply(value, op, b)
        if slip_prob and rng.random() < slip_prob:
            new += rng.choice((-2, -1, 1, 2))
        lines.append(f"Step {k}: {value} {op} {b} = {new}")
        value = new
    lines.append(f"Answer: {value}")
    return "\n".join(lines)


def _level_rng(seed: int, split: str, steps: int) -> random.Random:
    # A string seed is hashed deterministically (sha512), unlike hash() of a tuple.
    return random.Random(f"sgpo-arith:{seed}:{split}:{steps}")


def generate_split(
    split: str,
    steps: Sequence[int],
    n_per_level: int,
    seed: int = 0,
    spec: ArithSpec = ArithSpec(),
    exclude: Iterable[str] = (),
) -> list[ArithProblem]:
    """`n_per_level` distinct problems per difficulty in `steps`, seeded by (seed, split, steps).

    Problems whose text is in `exclude` (e.g. the test split) are skipped, so train and test do not overlap.
    At a level with fewer distinct problems than asked, as many as exist are returned.
    """
    if n_per_level < 0:
        raise InvalidInputError("n_per_level", f"must be >= 0; got {n_per_level}")
    banned = set(exclude)
    out: list[ArithProblem] = []
    for s in steps:
        rng, seen, tries = _level_rng(seed, split, s), set(banned), 0
        level: list[ArithProblem] = []
        while len(level) < n_per_level and tries < 50 * n_per_level + 1000:
            tries += 1
            p = generate_problem(rng, s, spec)
            if p.problem in seen:
                continue
            seen.add(p.problem)
            level.append(
                ArithProblem(p.problem, p.answer, p.solution, s, f"arith/{split}/{s}/{len(level)}", p.claims)
            )
        out.extend(level)
    return out


def iter_problems(
    steps: Sequence[int], seed: int = 0, spec: ArithSpec = ArithSpec(), exclude: Iterable[str] = ()
) -> Iterator[ArithProblem]:
    """An endless seeded stream of problems with difficulty drawn uniformly from `steps` (for SFT)."""
    if not steps:
        raise InvalidInputError("steps", "needs at least one difficulty level")
    banned = set(exclude)
    rng = random.Random(f"sgpo-arith-stream:{seed}:{','.join(map(str, steps))}")
    while True:
        p = generate_problem(rng, rng.choice(list(steps)), spec)
        if p.problem not in banned:
            yield p


def write_jsonl(path: Path | str, problems: Iterable[ArithProblem]) -> int:
    """Write problems as JSON lines (`problem`, `answer`, `solution`, `steps`, `unique_id`); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for p in problems:
            f.write(json.dumps(p.to_record()) + "\n")
            n += 1
    return n


def read_arith_problems(path: Path | str) -> list[ArithProblem]:
    """Problems written by `write_jsonl`; a malformed line is an error naming the file and line."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(
                ArithProblem(
                    d["problem"], str(d["answer"]), d["solution"], int(d["steps"]), d.get("unique_id", "")
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise InvalidInputError(
                f"{path}:{i}",
                f"is not an arith problem record ({e}); expected problem, answer, solution, steps",
            ) from None
    return out


def write_splits(
    out_dir: Path | str,
    train_steps: Sequence[int],
    test_steps: Sequence[int],
    n_train_per_level: int,
    n_test_per_level: int,
    seed: int = 0,
    spec: ArithSpec = ArithSpec(),
) -> dict[str, Path]:
    """train.jsonl and test.jsonl under `out_dir`; train never contains a test problem."""
    out_dir = Path(out_dir)
    test = generate_split("test", test_steps, n_test_per_level, seed, spec)
    train = generate_split(
        "train", train_steps, n_train_per_level, seed, spec, exclude=(p.problem for p in test)
    )
    paths = {"train": out_dir / "train.jsonl", "test": out_dir / "test.jsonl"}
    write_jsonl(paths["train"], train)
    write_jsonl(paths["test"], test)
    return paths
