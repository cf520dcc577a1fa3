"""The one error type for bad input to the algorithm: it names the field and says what was wrong."""

from __future__ import annotations


class InvalidInputError(ValueError):
    """Raised when input to a core function is malformed; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
