"""A real MathVerifier (worker processes included) shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sgpo.verifier import MathVerifier, VerifierConfig


@pytest.fixture(scope="module")
def verifier() -> Iterator[MathVerifier]:
    with MathVerifier(VerifierConfig(workers=2, deadline_s=5.0)) as v:
        v.wait_ready()
        yield v
