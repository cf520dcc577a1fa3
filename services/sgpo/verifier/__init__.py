"""The math verifier: answer extraction and equivalence that never hangs (issue 3).

`MathVerifier` is the in-process API; `server` serves it over gRPC (`sgpo serve verifier`) and `cli`
is `sgpo verify FILE.jsonl`. Importing this package does not import sympy: that happens in the workers.
"""

from sgpo.verifier.config import VerifierConfig
from sgpo.verifier.verifier import MathVerifier

__all__ = ["MathVerifier", "VerifierConfig"]
