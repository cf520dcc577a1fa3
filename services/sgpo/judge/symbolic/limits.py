"""Size limits of the symbolic checker: with them, any step is read in time linear in its length."""

MAX_DIGITS = 40  # per number literal
MAX_BITS = 2048  # numerator / denominator size of any intermediate value
MAX_EXPONENT = 256
MAX_DEPTH = 48  # nesting of parentheses, unary signs and LaTeX groups
MAX_EXPR_TOKENS = 200
MAX_STEP_CHARS = 50_000  # longer steps are checked on their first MAX_STEP_CHARS characters
