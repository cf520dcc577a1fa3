"""The `symbolic` backend: checks every arithmetic claim `expression = value` of each step, exactly.

What it reads: integers, decimals, thousands separators (14,000), fractions (2/5, \\frac{2}{5}), percentages
(20%, 20 percent, 20\\% of 50), \\times \\cdot \\div x × ÷, powers, \\sqrt of perfect squares, `$` amounts,
LaTeX units in \\text{...}, GSM8K calculator notes <<a*b=c>>, chains `a = b = c`, and `≈` / \\approx.
Arithmetic is exact (`fractions.Fraction`), with bounded number sizes, exponents and nesting, so any input
finishes in time linear in its length.

It never guesses. A claim is checked only when both sides are closed arithmetic: an expression glued to a
variable or function (`2x`, `f(3)`, `x - 5`), cut by a word that continues it (`20% of 50`, `half of 8`,
`1.5 million`), or with a bare number on each side (`1 hour = 60 minutes`) is skipped. A step with no
checkable claim is not an error, so a response without arithmetic gets -1.

A reader's tolerance: `0.5` equals `1/2`; a decimal with d places within 10^-d of the exact value is accepted
(1/3 = 0.33, 2/3 = 0.67, 100/7 = 14.29); `≈` accepts rounding to the stated precision or within 1%;
a percentage equals its fraction (25/100 * 100 = 25%); `5 + 3 = 8 - 2 = 6` is read as a running
computation.

On top of the arithmetic, for the synthetic task's `Step k: a op b = c` format (see `SymbolicBackend`):
chain consistency (each step starts from the previous result) and alignment with a reference solution in
the same format (a copied wrong operand or a dropped step is an error even when the arithmetic is right).

Layers, one module each, in reading order (docs/design.md, "2. Services and contracts" describes the judge):
- `latex`: LaTeX and prose to plain arithmetic notation (`normalize`).
- `tokens`: tokens of normalized text (`tokenize`).
- `expression`: the exact value of an expression (`evaluate`); literals and printing come from
  `sgpo.common.exact`, shared with the verifier.
- `claims`: the checkable claims of a step and whether each holds (`find_claims`).
- `chain`: the synthetic task's `Step k: a op b = c` format, chain and reference checks.
- `locator`: the first wrong step of each response (`check_steps`) and the backend (`SymbolicLocator`).
"""

from sgpo.judge.symbolic.chain import AnswerStep, ChainStep, FormatStep, parse_chain, parse_format_step
from sgpo.judge.symbolic.claims import Claim, find_claims
from sgpo.judge.symbolic.expression import ExpressionValue, Unsupported, evaluate
from sgpo.judge.symbolic.latex import normalize
from sgpo.judge.symbolic.locator import SymbolicLocator, SymbolicResult, check_steps, parse_reference
from sgpo.judge.symbolic.tokens import Token, tokenize

__all__ = [
    "AnswerStep",
    "ChainStep",
    "Claim",
    "ExpressionValue",
    "FormatStep",
    "SymbolicLocator",
    "SymbolicResult",
    "Token",
    "Unsupported",
    "check_steps",
    "evaluate",
    "find_claims",
    "normalize",
    "parse_chain",
    "parse_format_step",
    "parse_reference",
    "tokenize",
]
