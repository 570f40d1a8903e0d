"""The detection suite: check_grads fails every subtly wrong derivation and passes its fix.

The derivations (experiments/derivations.py) are real mistakes, written as a user's own
Activation or Loss; every problem has a row placed exactly on the kinks, so the mistakes
that live only at a kink are exercised too.
"""

import pytest

import mlp_jax as mj
from experiments.derivations import DERIVATIONS, draws, problem, scaled_tanh

SEEDS = draws(3)


@pytest.mark.parametrize("d", DERIVATIONS, ids=[d.name for d in DERIVATIONS])
def test_wrong_fails_right_passes(d):
    for seed in SEEDS:
        spec, params, x, y = problem(d, wrong=False, seed=seed)
        right = mj.check_grads(params, x, y, spec)
        assert right.passed, f"false alarm on the right derivation, seed {seed}\n{right}"
        spec, params, x, y = problem(d, wrong=True, seed=seed)
        wrong = mj.check_grads(params, x, y, spec)
        assert not wrong.passed, f"missed: {d.name}, seed {seed}\n{wrong}"
        # caught through jax.grad, whose allowance the error exceeds many times over
        assert max(leaf.autodiff.used for leaf in wrong.leaves) > 10, str(wrong)


def test_smallest_detectable_error_is_below_1e8():
    """A derivative off by a factor 1 + 1e-8 fails; the same net with 1 + 0 passes."""
    for seed in SEEDS:
        for eps, caught in ((1e-8, True), (0.0, False)):
            spec, params, x, y = problem(scaled_tanh(eps), wrong=True, seed=seed)
            assert mj.check_grads(params, x, y, spec).passed is not caught, (eps, seed)
