"""The math verifier: answer extraction and equivalence that never hangs.

`MathVerifier` is the in-process API; `server` serves it over gRPC (`sgpo serve verifier`) and `batch`
scores JSONL rows for `sgpo verify FILE.jsonl`. Importing this package does not import sympy: that happens in the workers.
"""

from sgpo.verifier.config import VerifierConfig
from sgpo.verifier.verifier import MathVerifier

__all__ = ["MathVerifier", "VerifierConfig"]
