"""Timeouts in tests are hang guards sized for a loaded machine, never speed checks.
``MLP_JAX_TEST_TIMEOUT_SCALE`` multiplies every one (default 3: a suite that shares 2
cores with another job passes slowly rather than failing)."""

import os

SCALE = float(os.environ.get("MLP_JAX_TEST_TIMEOUT_SCALE", "3"))


def guard(seconds: float) -> float:
    """A hang guard of ``seconds`` on a quiet machine, scaled for a loaded one."""
    return seconds * SCALE
