"""Imported once by the workers' forkserver, never by the service itself: importing it parses a corpus of
typical answer shapes, so that latex2sympy's ANTLR parser has built its prediction DFA (class-level state)
before any worker is forked. Every worker, including one that replaces a killed worker, inherits it.

Measured on the 2-core dev machine: parsing an unseen tuple of fractions cold took 10.6 s, and 2.4 s for
a similar one after a single warm-up parse; MATH-500's first 50 answers cost 4.7 s cold, later blocks of
50 cost 0.6 to 2 s. A cold worker would time out on ordinary answers at a 5 s deadline.
"""

from sgpo.verifier.equivalence import CheckRequest, check

CORPUS = (
    "\\frac{x^2+1}{2}",
    "3\\sqrt{13}",
    "\\sqrt[3]{\\frac{5}{12}}",
    "1 \\pm \\sqrt{19}",
    "(\\frac{\\sqrt{2}v^2_0}{g}-\\frac{v^2_0}{5\\pi g},\\frac{v^2_0}{4g})",
    "(6,31,-1)",
    "[-1, -\\frac{1}{2}) \\cup (-\\frac{1}{2}, 0) \\cup (1, \\infty)",
    "\\{1\\pm\\sqrt{5},-2\\}",
    "x \\in [-2,7]",
    "-2 \\le x \\le 7",
    "y = -\\frac{1}{2}x + \\frac{3}{4}",
    "a_{n} = 2n + 1",
    "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
    "2 \\sin b \\cos a",
    "e^{\\frac{-h \\nu}{k_B T}}",
    "7.8 \\times 10^{2}",
    "28\\%",
    "15 \\text{ cm}^2",
    "\\text{(C)}",
    "3 + 4i",
    "\\frac{n!}{k!(n-k)!}",
    "p = -1, p = \\frac{15}{8}",
    "|x - 2| < 3",
)

for _answer in CORPUS:
    check(CheckRequest(gold=_answer, pred=_answer))
check(CheckRequest(gold="[0, 1)", pred="the answer is $x \\in [0,1)$", pred_raw=True))
