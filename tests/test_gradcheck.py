"""Hand backprop vs jax.grad vs finite differences (the references: autodiff and FD)."""

import dataclasses
import json
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import mlp_jax as mj
from mlp_jax import gradcheck as gc
from mlp_jax.finitediff import REFINE, refine
from mlp_jax.gradmatrix import kink_problem, matrix_spec
from mlp_jax.passrule import Comparison, rel_error
from tests.procs import alive, children
from tests.readme import check_example
from tests.timeouts import guard


@pytest.mark.slow
@pytest.mark.calibration
def test_matrix_cli_every_cell_passes(tmp_path):
    """`mlp-jax gradcheck` over every activation x loss x depth 1-4 x reg x dropout, and
    both norms."""
    out = tmp_path / "cells.json"
    proc = subprocess.run([sys.executable, "-m", "mlp_jax.cli", "gradcheck", "--quiet",
                           "--json", str(out)], capture_output=True, text=True, timeout=guard(600))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = json.loads(out.read_text())
    assert len(cells) == 10 * 5 * 4 * 2 * 2 + 2 * 9 * 5 * 3  # + the two norms (not maxout)
    assert {c["norm"] for c in cells} == {None, "layernorm", "batchnorm"}
    assert all(c["passed"] for c in cells)
    assert max(c["used"] for c in cells) <= 1.0
    assert max(c["absolute_used_autodiff"] for c in cells) <= 1.0
    assert max(c["absolute_used_fd"] for c in cells) <= 1.0
    assert sum(c["kink_entries"] for c in cells) > 0  # the kinks were really visited
    assert "1070 cells, 0 failed" in proc.stdout
    assert "rule per entry: |hand - ref| <= rtol (|hand| + |ref|) + absolute" in proc.stdout


@pytest.mark.parametrize("act,norm", [("relu", None), ("leaky_relu", None), ("elu", None),
                                      ("maxout", None), ("relu", "layernorm"),
                                      ("relu", "batchnorm")])
def test_kink_problem_sits_exactly_on_kinks(act, norm, x64):
    """The matrix's row 0 must be exactly on the kinks, or the kink claim is hollow (with a
    norm: beta puts row 0's normalized values at 0; batch norm in training mode, as the
    matrix checks it)."""
    spec = matrix_spec(act, "svm", 3, 0.0, 0.0, norm)
    params, x, y = kink_problem(spec, seed=0)
    scores, cache = mj.network.forward_with_cache(params, x, spec, train=True)
    for entry in cache[:-1]:
        assert np.all(np.asarray(entry["z"])[0] == 0.0)  # every hidden pre-activation, row 0
    s = np.asarray(scores)[0]
    assert s[0] - s[y[0]] + 1.0 == 0.0  # svm margin exactly 0
    spec_h = matrix_spec(act, "hinge", 3, 0.0, 0.0)
    params, x, y = kink_problem(spec_h, seed=0)
    s = np.asarray(mj.forward(params, x, spec_h))[0, 0]
    assert 1.0 - y[0] * s == 0.0


@pytest.mark.parametrize("act,loss", list(zip(mj.ACTIVATION_NAMES, mj.LOSS_NAMES * 2)))
def test_every_activation_and_loss_on_its_kinks(act, loss):
    """The matrix's hardest row in the fast suite, every activation and every loss once (the
    slow CLI test above runs every pair): depth 3 with reg and dropout, row 0 on every
    kink, judged by check_grads against jax.grad and finite differences."""
    spec = matrix_spec(act, loss, 3, 0.1, 0.3)
    with jax.enable_x64(True):
        params, x, y = kink_problem(spec, seed=1)
        report = mj.check_grads(params, x, y, spec, key=jax.random.key(1), jit=False)
    assert report.passed, str(report)
    assert report.kink_entries > 0 or act not in ("relu", "leaky_relu", "elu", "maxout")


ELEMENTWISE = ["relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh",
               "identity"]


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activation_derivative_equals_autodiff_everywhere(name, x64):
    act = mj.activations.elementwise(name, leaky_slope=0.1, elu_alpha=0.7)
    z = jnp.array([-1e4, -30.0, -2.0, -1e-300, -0.0, 0.0, 1e-300, 0.5, 2.0, 30.0, 1e4])
    ref = jax.vmap(jax.grad(act.fn))(z)
    hand = act.deriv(z, act.fn(z))
    np.testing.assert_allclose(hand, ref, rtol=1e-12, atol=0)  # same maths, may round apart
    at_kinks = np.abs(np.asarray(z)) <= 1e-300
    np.testing.assert_array_equal(np.asarray(hand)[at_kinks], np.asarray(ref)[at_kinks])


def test_maxout_tie_goes_to_first_piece_in_both():
    z = jnp.array([[[1.0, 2.0], [1.0, 3.0]]])  # (N=1, k=2, out=2): unit 0 ties
    h, idx = mj.activations.maxout(z)
    dz_hand = mj.activations.maxout_backward(jnp.ones((1, 2)), idx, 2)
    dz_auto = jax.grad(lambda z: jnp.sum(mj.activations.maxout(z)[0]))(z)
    np.testing.assert_array_equal(dz_hand, dz_auto)
    np.testing.assert_array_equal(dz_hand, [[[1.0, 0.0], [0.0, 1.0]]])


def test_rel_error_is_cs231ns():
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert rel_error([1.0], [3.0]) == pytest.approx(0.5)
    assert rel_error([0.0], [1e-12]) == pytest.approx(1e-4)  # the 1e-8 floor
    assert rel_error([], []) == 0.0  # nothing compared: no error


def softplus_spec(deriv):
    act = mj.Activation("softplus", jax.nn.softplus, deriv)
    return mj.MLPSpec((3, 5, 4), activation=act, loss="softmax", reg=0.01)


def test_user_activation_right_and_wrong():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.integers(0, 4, 6)
    good = softplus_spec(lambda z, a: jax.nn.sigmoid(z))
    params = mj.init_params(jax.random.key(0), good)
    assert mj.check_grads(params, x, y, good).passed
    wrong = softplus_spec(lambda z, a: jax.nn.sigmoid(z) * (1 - jax.nn.sigmoid(z)))
    report = mj.check_grads(params, x, y, wrong)
    assert not report.passed
    assert report.worst_autodiff > 1e-3 and report.worst_fd > 1e-3
    assert "FAIL" in str(report)


def test_user_loss_right_and_wrong():
    """A user's own loss: mean absolute error, kink at 0 declared via kink_state."""
    def value(s, y):
        return jnp.sum(jnp.where(s - y > 0, s - y, y - s), axis=1)

    def grad(s, y):
        return jnp.where(s - y > 0, 1.0, -1.0).astype(s.dtype)

    mae = mj.Loss("mae", value, grad, labels="real", kink_state=lambda s, y: s - y > 0)
    spec = mj.MLPSpec((3, 5, 2), activation="tanh", loss=mae)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    params = mj.init_params(jax.random.key(0), spec)
    assert mj.check_grads(params, x, y, spec).passed
    bad = mj.Loss("mae", value, lambda s, y: 0.5 * grad(s, y), labels="real")
    assert not mj.check_grads(params, x, y, mj.MLPSpec((3, 5, 2), "tanh", loss=bad)).passed


@pytest.mark.slow
@pytest.mark.calibration
def test_random_sweep_has_no_false_alarms(tmp_path):
    """`mlp-jax gradcheck --random`: 50 random problems of correct code, seeded, all pass.

    Seed 2430 draws 10 configurations covering every depth 1-6, every loss, 8 activations
    (maxout among them) and both norms and none (the matrix covers every activation); each
    compile costs more than its 5 problems. Chosen among seeds with that coverage for its
    cost: 56 s on 2 cores, where seed 9 (the earlier choice, 6 configurations with a norm,
    checked op by op on the kinks) took 147 s and visited 367 kink entries to its 5530."""
    out = tmp_path / "random.json"
    proc = subprocess.run([sys.executable, "-m", "mlp_jax.cli", "gradcheck", "--random", "50",
                           "--draws", "5", "--seed", "2430", "--quiet", "--json", str(out)],
                          capture_output=True, text=True, timeout=guard(600))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = json.loads(out.read_text())
    assert len(cells) == 50 and all(c["passed"] for c in cells)
    assert {c["depth"] for c in cells} == set(range(1, 7))
    assert {c["loss"] for c in cells} == set(mj.LOSS_NAMES)
    assert len({c["activation"] for c in cells}) == 8
    assert {c["norm"] for c in cells} == {None, "batchnorm", "layernorm"}
    assert sum(c["on_kinks"] for c in cells) == 30 and sum(c["kink_entries"] for c in cells)
    assert "maxout" in {c["activation"] for c in cells}
    assert "50 problems, 0 false alarms" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("argv,match", [(["--workers", "0"], "must be a finite number > 0"),
                                        (["--workers", "-1"], "must be a finite number > 0"),
                                        (["--random", "0"], "must be a finite number > 0"),
                                        (["--random", "5", "--seed", "-1"], "must be >= 0")])
def test_gradcheck_cli_bad_counts_one_line(argv, match):
    proc = subprocess.run([sys.executable, "-m", "mlp_jax.cli", "gradcheck", *argv],
                          capture_output=True, text=True, timeout=guard(60))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and match in proc.stderr


@pytest.mark.slow
def test_gradcheck_cli_json_into_missing_folder_fails_first(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mlp_jax.cli", "gradcheck", "--json",
                           str(tmp_path / "nope" / "cells.json")],
                          capture_output=True, text=True, timeout=guard(60))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert proc.stdout == ""  # refused before any cell ran


# --- The pass rule, judged against a direct computation of its formula. ---------
def _rule(hand, ref, rtol, absolute):
    return np.abs(hand - ref) <= rtol * (np.abs(hand) + np.abs(ref)) + absolute


@pytest.mark.parametrize("ratio", [0.99, 1.01])
def test_rule_has_no_cliff(ratio):
    """Entries 1e-12, 1e-9 and 1e-4 of their layer's scale are all judged by one formula:
    just inside the allowance passes, just outside fails."""
    S, rtol, floor = 2.0, 1e-10, 1e-14
    for size in (1e-12, 1e-9, 1e-4):
        ref = np.array([S, size * S])
        # d = |hand - ref| with hand = ref + d: d <= rtol (2 ref + d) + floor S, solved for d
        d = ratio * (rtol * 2 * ref[1] + floor * S) / (1 - rtol)
        hand = ref + np.array([0.0, d])
        c = Comparison.of(hand, ref, rtol, {"floor": floor * S})
        assert c.passed == bool(_rule(hand, ref, rtol, floor * S).all())
        assert c.passed == (ratio < 1), (size, c)
        assert c.worst_index == (1,)
        assert c.decided == ("floor" if rtol * (abs(hand[1]) + ref[1]) < floor * S else "rtol")


def test_rule_random_arrays_match_formula():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ref = rng.normal(size=7) * 10.0 ** rng.uniform(-12, 0, 7)
        hand = ref * (1 + rng.normal(size=7) * 10.0 ** rng.uniform(-14, -8)) \
            + rng.normal(size=7) * 10.0 ** rng.uniform(-18, -13)
        noise, trunc = 1e-16, np.abs(rng.normal(size=7)) * 1e-15
        c = Comparison.of(hand, ref, 1e-10, {"noise": noise, "trunc": trunc})
        assert c.passed == bool(_rule(hand, ref, 1e-10, noise + trunc).all())
        relative = 1e-10 * (np.abs(hand) + np.abs(ref))
        need = np.max(np.maximum(np.abs(hand - ref) - relative, 0) / (noise + trunc))
        assert c.absolute_used == pytest.approx(need, rel=1e-12)
        i = c.worst_index[0]
        terms = {"rtol": relative[i], "noise": noise, "trunc": trunc[i]}
        assert c.decided == max(terms, key=terms.get)


def test_rule_nan_fails_and_excluded_entries_are_ignored():
    ref = np.array([1.0, 2.0, 3.0])
    floor = {"floor": 1e-14 * 3.0}
    assert not Comparison.of(np.array([1.0, np.nan, 3.0]), ref, 1e-10, floor).passed
    wrong_but_excluded = np.array([1.0, 5.0, 3.0])
    c = Comparison.of(wrong_but_excluded, ref, 1e-10, floor,
                      include=np.array([True, False, True]))
    assert c.passed and c.checked == 2
    assert not Comparison.of(wrong_but_excluded, ref, 1e-10, floor).passed


def test_rule_edge_cases_report_exact_numbers_and_warn_nothing():
    """NaN is used = inf (not NaN); an excluded entry is neither the worst nor counted in
    absolute_used; an exact zero with zero allowance needs nothing (0, not 0/0); and
    zero allowances divide silently (no RuntimeWarning reaches the user)."""
    import warnings

    ref = np.array([1.0, 2.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Comparison.of(np.array([1.0, np.nan, 3.0]), ref, 1e-10, {"floor": 0.0}).used \
            == np.inf
        c = Comparison.of(np.array([1.0, 5.0, 3.0]), ref, 1e-10, {"floor": 1e-14},
                          include=np.array([True, False, True]))
        assert (c.used, c.absolute_used, c.worst_index) == (0.0, 0.0, (0,))
        zero = Comparison.of(np.zeros(3), np.zeros(3), 1e-10, {"floor": 0.0})
        assert (zero.used, zero.absolute_used) == (0.0, 0.0)
        tiny = Comparison.of(np.array([0, 1e-300, 0]), np.zeros(3), 0.0, {"floor": 0.0})
        assert (tiny.used, tiny.worst_index, tiny.passed) == (np.inf, (1,), False)


def test_zero_scale_layer_is_judged_relatively():
    """A layer whose true gradient is all zero has no floor: any nonzero hand value fails."""
    assert Comparison.of(np.zeros(3), np.zeros(3), 1e-10, {"floor": 0.0}).passed
    assert not Comparison.of(np.array([0, 1e-300, 0]), np.zeros(3), 1e-10, {"floor": 0.0}).passed


def test_richardson_estimate_bounds_the_stencil_error(x64):
    """On a net whose loss curves hard along single weights (a deep linear net with large
    weights), the 4-point stencil is off by far more than rounding; the Richardson estimate
    returned beside it covers the true error (jax.grad), entry by entry."""
    spec = mj.MLPSpec((3, 6, 6, 6, 6, 2), activation="identity", loss="softmax",
                      dtype="float64")
    params = tuple(dict(p, W=3 * p["W"]) for p in mj.init_params(jax.random.key(1), spec))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3)), rng.integers(0, 2, 4)
    fd, err, _ = mj.finite_differences(params, x, y, spec)
    ref = ravel_pytree(jax.grad(mj.loss)(params, x, y, spec))[0]
    true_err = np.abs(np.asarray(fd) - np.asarray(ref))
    assert true_err.max() > 1e-9  # truncation, far above float64 rounding
    # the estimate follows the error within a few percent; 1e-10 stands for rounding,
    # which check_grads covers with its noise term (~10 eps M / h = 1e-11 here)
    assert np.all(true_err <= 1.5 * np.asarray(err) + 1e-10)
    big = true_err > 1e-8  # 94 entries; estimate / error seen in [0.9975, 1.0204]
    np.testing.assert_allclose(np.asarray(err)[big], true_err[big], rtol=0.03)


class Rebuilt(NamedTuple):
    name: str
    shape: tuple
    kinks: int
    autodiff: Comparison
    fd: Comparison
    backward: np.ndarray  # jax.grad's backward rounding, measured entry by entry


def _rebuilt(params, x, y, spec, h=1e-3, hyper=None, key=None, train=True, stats=None):
    """Every leaf's comparisons (vs jax.grad, vs finite differences) rebuilt from the module
    docstring's rule (see the test below), float64 inputs, inside ``jax.enable_x64``;
    entries the estimate at h contradicts redone by ``finitediff.refine`` (tested at its
    edges apart) at ``h / REFINE``."""
    kw = dict(hyper=spec.hyper() if hyper is None else hyper, key=key, train=train,
              stats=stats)
    loss_ad, auto = jax.value_and_grad(mj.loss)(params, x, y, spec, **kw)
    hand = mj.backprop(params, x, y, spec, **kw)[1]
    s, pullback = jax.vjp(lambda p: mj.forward(p, x, spec, **kw), params)
    s = np.asarray(s)
    eps = np.finfo(np.float64).eps
    (rounding,) = pullback(jnp.asarray(eps * (1.0 + np.abs(s)) / len(s)))
    loss_pullback = jax.vjp(lambda p: mj.loss(p, x, y, spec, **kw), params)[1]
    # scaled back in jax as check_grads does (XLA divides by a constant as a product
    # with its reciprocal, which rounds otherwise than numpy's division)
    back = [jax.tree.map(lambda g, a, c=c: jnp.abs(g / c - a), loss_pullback(
        jnp.asarray(c))[0], auto) for c in (3.0, 1 / 3)]
    leaves = jax.tree.leaves(params)
    P = sum(a.size for a in leaves)
    fd, err, straddle = mj.finite_differences(params, x, y, spec, h=h, entries=jnp.arange(P),
                                              **kw)
    magnitude = abs(float(loss_ad)) + np.abs(s).sum(1).mean()
    fd, err, noise, _ = refine(
        lambda at, step: mj.finite_differences(params, x, y, spec, h=step, entries=at, **kw),
        ravel_pytree(hand)[0], np.arange(P), fd, err, np.asarray(straddle),
        gc.RULE.fd_noise * eps * magnitude, h, gc.RULE.tol_fd, gc.RULE.fd_trunc)
    fd, err, noise, straddle = (np.split(np.asarray(a), np.cumsum([a.size for a in
                                leaves])[:-1]) for a in (fd, err, noise, straddle))
    rebuilt, i = [], 0
    for layer, p in enumerate(params):
        S = max(np.abs(np.asarray(a)).max() for a in auto[layer].values())
        R = max(np.abs(np.asarray(a)).max() for a in rounding[layer].values())
        B = max(np.asarray(b[layer][j]).max() for b in back for j in auto[layer])
        for k in sorted(p):  # as jax.tree.leaves
            hl, al = np.asarray(hand[layer][k]), np.asarray(auto[layer][k])
            ad = Comparison.of(hl, al, gc.RULE.tol_autodiff,
                               {"floor": gc.RULE.floor_autodiff * S,
                                "noise": gc.RULE.ad_noise * R,
                                "backward": gc.RULE.ad_backward * B})
            fdc = Comparison.of(hl, fd[i].reshape(hl.shape), gc.RULE.tol_fd,
                                {"noise": noise[i].reshape(hl.shape),
                                 "trunc": gc.RULE.fd_trunc * err[i].reshape(hl.shape)},
                                ~straddle[i].reshape(hl.shape))
            measured = np.maximum(*(np.asarray(b[layer][k]) for b in back))
            rebuilt.append(Rebuilt(f"{k}{layer + 1}", hl.shape, int(straddle[i].sum()), ad, fdc,
                                   measured))
            i += 1
    return rebuilt


def _assert_same(got, want, name):
    """A report's comparison equals the rebuilt one (to rounding in the division)."""
    assert got.used == pytest.approx(want.used, rel=1e-9), name
    assert got.absolute_used == pytest.approx(want.absolute_used, rel=1e-9, abs=1e-300)
    assert (got.decided, got.worst_index, got.checked) == \
        (want.decided, want.worst_index, want.checked), name


def test_report_applies_the_documented_rule_entry_by_entry():
    """Every leaf's verdict rebuilt here from the module docstring's rule: vs jax.grad,
    floor x S (S the layer's largest |jax.grad| entry, W and b together) + noise x R (R the
    layer's largest entry of the loss gradient's rounding, eps (1 + |s|) / N, pulled back
    through the network) + backward x B (B the layer's largest difference between jax.grad
    and its backward pass run from the cotangents 3 and 1/3, scaled back); vs finite
    differences, noise x eps M / h (M = |L| + mean_i sum_j
    |s_ij|) + trunc x each entry's Richardson estimate, straddling entries left out. The
    loss's gradient is off by 1e-12 (well inside CS231n's 1e-10: it passes), so every entry
    differs from its references and every 'used' depends on its allowance."""
    off = mj.losses.Loss("svm_off", mj.losses.SVM.value,
                         lambda s, y: mj.losses.SVM.grad(s, y) * (1 + 1e-12),
                         mj.losses.CLASS, mj.losses.SVM.kink_state)
    spec = dataclasses.replace(matrix_spec("relu", "svm", 3, 0.1, 0.3), loss=off)
    key, h, reg = jax.random.key(1), 2e-3, 0.3  # not the defaults (h 1e-3, spec.reg 0.1)
    with jax.enable_x64(True):
        params, x, y = kink_problem(spec, seed=1)
        hyper = spec.hyper()._replace(reg=reg)
        report = mj.check_grads(params, x, y, spec, hyper=hyper, key=key, h=h, jit=False)
        kw = dict(hyper=hyper, key=key, train=True)
        loss_hand = mj.backprop(params, x, y, spec, **kw)[0]
        loss_ad = mj.loss(params, x, y, spec, **kw)
        rebuilt = _rebuilt(params, x, y, spec, h, **kw)
        backward = gc._all_three(params, x, y, spec, hyper, key, True, None, h,
                                 jnp.arange(1))[-1]  # its measurement, entry by entry
    assert report.passed and report.refined == 0, str(report)
    assert (report.loss_hand, report.loss_autodiff) == (float(loss_hand), float(loss_ad))
    assert [leaf.name for leaf in report.leaves] == [want.name for want in rebuilt]
    for leaf, want, measured in zip(report.leaves, rebuilt, jax.tree.leaves(backward)):
        for got, expected in ((leaf.autodiff, want.autodiff), (leaf.fd, want.fd)):
            assert got.used > 0 or got.checked == 0, leaf.name  # every compared entry differs
            _assert_same(got, expected, leaf.name)
        assert leaf.kink_entries == want.kinks and leaf.shape == want.shape
        np.testing.assert_allclose(measured, want.backward, rtol=1e-12, atol=0)
        assert leaf.fd_entries == np.prod(want.shape)
    assert report.kink_entries > 0


# --- Scale: memory linear in the parameter count, sampling above a size. ---------
def test_fd_default_chunk_follows_the_parameter_count(x64):
    """Without `chunk`, finite_differences compiles the chunk fd_chunk_size gives for its
    parameter count (166 for these 4,204): the same temp memory, far below 256's."""
    from mlp_jax.finitediff import fd_chunk_size
    spec = mj.MLPSpec((100, 40, 4), activation="tanh", loss="softmax", dtype="float64")
    params = mj.init_params(jax.random.key(0), spec)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 100)), rng.integers(0, 4, 5)
    fd = jax.jit(mj.finite_differences, static_argnames=("spec", "chunk"))

    def temp_bytes(chunk):
        return fd.lower(params, x, y, spec, entries=jnp.arange(1000), chunk=chunk).compile() \
            .memory_analysis().temp_size_in_bytes

    assert fd_chunk_size(4204) == 166
    assert temp_bytes(None) == temp_bytes(166) < 0.8 * temp_bytes(256)


def test_fd_gives_the_same_derivatives_in_any_number_of_chunks(x64):
    """One chunk, two, or one entry per chunk: the same derivatives and straddles."""
    spec = mj.MLPSpec((3, 4, 2), activation="relu", loss="svm", dtype="float64")
    params, x, y = kink_problem(spec, seed=0, n=4)
    one = mj.finite_differences(params, x, y, spec, chunk=26)  # 26 parameters
    for chunk in (13, 14, 1):  # exactly two chunks, two with padding, 26 chunks
        other = mj.finite_differences(params, x, y, spec, chunk=chunk)
        for a, b in zip(one, other):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)
    assert one[2].any() and not one[2].all()  # some entries straddle a kink, not all


def test_fd_chunks_looped_not_unrolled(x64):
    """10x the entries: the same compiled temp memory (one chunk looped over), and
    chunked results equal the one-chunk results and jax.grad."""
    spec = mj.MLPSpec((30, 20, 4), activation="tanh", loss="softmax", reg=0.1, dtype="float64")
    params = mj.init_params(jax.random.key(0), spec)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 30)), rng.integers(0, 4, 5)
    fd = jax.jit(mj.finite_differences, static_argnames=("spec", "chunk"))

    def temp_bytes(n):
        entries = jnp.arange(n)
        return fd.lower(params, x, y, spec, entries=entries, chunk=8).compile() \
            .memory_analysis().temp_size_in_bytes

    assert temp_bytes(640) <= 1.05 * temp_bytes(64)
    entries = jnp.arange(0, 704, 7)
    g8, _, s8 = fd(params, x, y, spec, entries=entries, chunk=8)
    g_all, _, _ = fd(params, x, y, spec, entries=entries, chunk=256)
    # other chunk sizes batch the forwards differently: equal to the stencil's rounding
    # noise, ~18 * eps * loss / (12 h) = 4e-13 here
    np.testing.assert_allclose(g8, g_all, rtol=0, atol=1e-11)
    ref = ravel_pytree(jax.grad(mj.loss)(params, x, y, spec))[0][entries]
    np.testing.assert_allclose(g8, ref, rtol=1e-7, atol=1e-10)
    assert not s8.any()  # tanh and softmax have no kinks


def test_each_estimate_evaluates_only_the_offsets_its_formula_uses():
    """The offsets each estimate needs, from the formulas (in steps h): the centred
    fourth-order difference at h uses +-h and +-2h, the same at 2h +-2h and +-4h; the
    one-sided second-order ones at h use 0, h, 2h and at 2h 0, 2h, 4h (mirrored on the
    left). Checked for each and for their unions, as the checks ask for them."""
    from mlp_jax.finitediff import points

    uses = {"centred": {-4, -2, -1, 1, 2, 4}, "right": {0, 1, 2, 4}, "left": {-4, -2, -1, 0}}
    for names in [("centred",), ("right",), ("left",), ("left", "right"),
                  ("centred", "right", "left")]:
        want = sorted(set().union(*(uses[n] for n in names)))
        assert points(names) == tuple(float(t) for t in want), names
    assert points() == (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0)


def test_each_estimates_rounding_gain_is_the_sum_of_its_coefficients_at_h():
    """How much an estimate at h amplifies rounding in f: the sum of its coefficients'
    sizes, (1 + 8 + 8 + 1) / 12 centred and (3 + 4 + 1) / 2 one-sided."""
    from mlp_jax.finitediff import weight_sum

    np.testing.assert_allclose([weight_sum(n) for n in ("centred", "right", "left")],
                               [1.5, 4.0, 4.0], rtol=1e-15)


def test_candidates_centred_where_the_sides_agree_one_side_or_the_convention_on_a_kink():
    """finitediff.candidates, entry by entry, against its definition: a kink where the
    left and right estimates differ by more than both allowances together (each side's
    terms, its rounding and truncation, and rtol of both); off a kink the first candidate
    is the centred estimate with its allowance, on one the left (or, given, autodiff's
    convention, which carries no finite-difference error); then left and right as they
    are. Entry 3 sits exactly on the boundary (not a kink: the sides agree within)."""
    from mlp_jax.finitediff import candidates

    dl = np.array([1.0, 1.0, -2.0, 2.0, 40.0])
    dr = np.array([1.0 + 1e-9, 3.0, -2.0, 3.0, 41.0])
    dc = np.array([1.5, 2.0, -2.5, 2.5, 40.5])
    est = {"left": (dl, np.full(5, 0.125), np.full(5, 0.25)),
           "right": (dr, np.full(5, 0.125), np.full(5, 0.25)),
           "centred": (dc, np.full(5, 0.0625), np.full(5, 0.03125))}
    terms = {"noise": np.array([0.125, 0.125, 0.125, 0.125, 0.0])}
    conv = np.array([7.0, 8.0, 9.0, 10.0, 11.0])
    for rtol, want in [(0.0, [False, True, False, False, True]),
                       (2**-4, [False, True, False, False, False])]:
        # entry 4 at rtol 1/16: 1 <= 2 x 0.375 + (40 + 41) / 16: the relative term decides
        for convention in (None, conv):
            (c0, c1, c2), kink = candidates(est, rtol, terms, convention)
            np.testing.assert_array_equal(kink, want)
            on = np.asarray(want)
            np.testing.assert_array_equal(c0[0], np.where(on, dl if convention is None
                                                          else conv, dc))
            assert c0[1] == c1[1] == c2[1] == rtol
            side = {"noise": terms["noise"], "fd": 0.125, "trunc": 0.25}
            centre = {"noise": terms["noise"], "fd": 0.0625, "trunc": 0.03125}
            assert set(c0[2]) == set(c1[2]) == set(c2[2]) == set(side)
            for k in side:
                off_kink = np.broadcast_to(centre[k], 5)
                on_kink = (np.broadcast_to(side[k], 5) if convention is None or k == "noise"
                           else np.zeros(5))
                np.testing.assert_array_equal(c0[2][k], np.where(on, on_kink, off_kink), k)
                np.testing.assert_array_equal(c1[2][k], np.broadcast_to(side[k], 5), k)
                np.testing.assert_array_equal(c2[2][k], np.broadcast_to(side[k], 5), k)
            np.testing.assert_array_equal(c1[0], dl)
            np.testing.assert_array_equal(c2[0], dr)


def test_fd_picks_sample_by_seed_without_repeats():
    from mlp_jax.finitediff import pick_entries
    from mlp_jax.gradcheck import FD_FULL_LIMIT, FD_SAMPLE_PER_LEAF

    def _fd_picks(sizes, fd_entries, seed):  # as check_grads picks
        return pick_entries(sizes, fd_entries, np.random.default_rng(seed), FD_FULL_LIMIT,
                            FD_SAMPLE_PER_LEAF)
    sizes = [FD_FULL_LIMIT, 300, 7]
    picks = _fd_picks(sizes, "auto", seed=3)  # 4,403 parameters: sampled
    assert [p.size for p in picks] == [FD_SAMPLE_PER_LEAF, FD_SAMPLE_PER_LEAF, 7]
    for p, n in zip(picks, sizes):
        assert np.all(np.diff(p) > 0) and p[0] >= 0 and p[-1] < n  # sorted, distinct, in range
    again, other = _fd_picks(sizes, "auto", seed=3), _fd_picks(sizes, "auto", seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(picks, again))
    assert not np.array_equal(picks[0], other[0])
    assert [p.size for p in _fd_picks([FD_FULL_LIMIT], "auto", 0)] == [FD_FULL_LIMIT]
    assert [p.size for p in _fd_picks(sizes, None, 0)] == sizes
    assert [p.size for p in _fd_picks(sizes, 10, 0)] == [10, 10, 7]


def test_chunk_size_respects_memory_budget():
    from mlp_jax.finitediff import CHUNK_BYTES as FD_CHUNK_BYTES
    from mlp_jax.finitediff import fd_chunk_size
    for P in (10, 4096, 79_510, 10**7):
        B = fd_chunk_size(P)
        assert 1 <= B <= 256 and (B == 1 or 6 * B * P * 8 <= FD_CHUNK_BYTES)


def test_fd_chunk_is_the_most_float64_copies_the_budget_holds():
    """Six perturbed float64 copies of the P parameters per entry: the chunk is as many
    entries as FD_CHUNK_BYTES holds, between 1 and 256 (float32 copies: about twice as
    many)."""
    from mlp_jax.finitediff import CHUNK_BYTES as FD_CHUNK_BYTES
    from mlp_jax.finitediff import fd_chunk_size
    for P in (10, 4096, 79_510, 10**7):
        assert fd_chunk_size(P) == max(1, min(256, FD_CHUNK_BYTES // (6 * 8 * P)))
    assert (fd_chunk_size(79_510), fd_chunk_size(79_510, itemsize=4)) == (8, 17)


def test_finite_differences_are_in_evaluation_mode_unless_asked(x64):
    spec = mj.MLPSpec((3, 4, 2), activation="tanh", dropout=0.5)
    params = mj.init_params(jax.random.key(0), spec)
    x, y, key = np.ones((2, 3)), np.array([0, 1]), jax.random.key(1)
    default, evaluated, trained = (
        mj.finite_differences(params, x, y, spec, key=key, **kw)[0]
        for kw in ({}, dict(train=False), dict(train=True)))
    np.testing.assert_array_equal(default, evaluated)
    assert not np.array_equal(default, trained)


def test_large_net_samples_fd_and_covers_all_of_autodiff():
    from mlp_jax.gradcheck import FD_FULL_LIMIT, FD_SAMPLE_PER_LEAF
    spec = mj.MLPSpec((100, 50, 10), activation="relu", loss="svm")  # 5,560 parameters
    assert 100 * 50 + 50 * 10 + 60 > FD_FULL_LIMIT
    params = mj.init_params(jax.random.key(0), spec)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 100)), rng.integers(0, 10, 8)
    report = mj.check_grads(params, x, y, spec)
    assert report.passed, str(report)
    by_name = {leaf.name: leaf for leaf in report.leaves}
    assert by_name["W1"].fd_entries == FD_SAMPLE_PER_LEAF and by_name["b2"].fd_entries == 10
    assert by_name["W1"].autodiff.checked == 5000  # jax.grad: every entry
    assert "sample" in str(report)
    full = mj.check_grads(params, x, y, spec, fd_entries=None)
    assert {leaf.fd_entries for leaf in full.leaves} == {5000, 50, 500, 10}
    for bad in (0, -3, 2.5, "all", True):
        with pytest.raises(ValueError, match="fd_entries must be 'auto', None"):
            mj.check_grads(params, x, y, spec, fd_entries=bad)


def test_check_grads_defaults_do_what_its_docstring_says():
    """A key means training mode unless train=False; labels are validated first; up to
    FD_FULL_LIMIT parameters every entry is finite-differenced, even in a leaf larger than
    a sample; above it, the sample is seed 0's unless another seed is given."""
    from mlp_jax.gradcheck import FD_FULL_LIMIT, FD_SAMPLE_PER_LEAF
    spec = mj.MLPSpec((20, 30, 3), activation="tanh", dropout=0.5)  # 723 parameters
    params = mj.init_params(jax.random.key(0), spec)
    rng = np.random.default_rng(0)
    x, y, key = rng.normal(size=(6, 20)), rng.integers(0, 3, 6), jax.random.key(1)
    plain = mj.check_grads(params, x, y, spec)
    assert [leaf.fd_entries for leaf in plain.leaves] == [600, 30, 90, 3]
    assert 600 > FD_SAMPLE_PER_LEAF
    evaluated = mj.check_grads(params, x, y, spec, key=key, train=False)
    trained = mj.check_grads(params, x, y, spec, key=key, hyper=spec.hyper()._replace(reg=0.3))
    assert evaluated.loss_hand == plain.loss_hand != trained.loss_hand
    head = "sizes=(20, 30, 3), activation=tanh, loss=softmax, "
    assert evaluated.spec_summary == head + "reg=0.0, dropout=0, N=6"
    assert trained.spec_summary == head + "reg=0.3, dropout=0.5, N=6"
    assert str(trained).startswith(f"gradient check: {head}reg=0.3, dropout=0.5, N=6\n")
    assert [leaf.fd_entries for leaf in mj.check_grads(params, x, y, spec, fd_entries=1).leaves] \
        == [1, 1, 1, 1]
    with pytest.raises(ValueError, match=r"labels in \[0, 2\]"):
        mj.check_grads(params, x, np.full(6, 3), spec)
    big = mj.MLPSpec((90, 50, 3), activation="tanh")  # 4,703 parameters: sampled
    assert 90 * 50 + 50 + 150 + 3 > FD_FULL_LIMIT
    params = mj.init_params(jax.random.key(0), big)
    x = rng.normal(size=(6, 90))
    by_seed = {seed: mj.check_grads(params, x, y, big, seed=seed) for seed in (0, 1)}
    default = mj.check_grads(params, x, y, big)
    assert default.leaves[0].fd == by_seed[0].leaves[0].fd != by_seed[1].leaves[0].fd


@pytest.mark.parametrize("term,kwargs", [
    ("autodiff floor", dict(floor_autodiff=1e3, ad_noise=0.0)),
    ("autodiff noise", dict(floor_autodiff=0.0, ad_noise=1e6)),
    ("fd noise", dict(fd_noise=1e6, fd_trunc=0.0)),
    ("fd trunc", dict(fd_noise=0.0, fd_trunc=1e6, tol_fd=0.0))])
def test_each_allowance_term_is_named_where_it_decides(term, kwargs):
    """`decided` names the term that set the worst entry's allowance: made to dominate,
    each absolute term is the one every leaf reports."""
    spec = mj.MLPSpec((20, 30, 3), activation="tanh")
    params = mj.init_params(jax.random.key(0), spec)
    rng = np.random.default_rng(0)
    rule = dataclasses.replace(gc.RULE, **kwargs)
    report = mj.check_grads(params, rng.normal(size=(6, 20)), rng.integers(0, 3, 6), spec,
                            rule=rule)
    assert report.rule == rule and f"\n{rule}\n" in str(report)
    reference, name = term.split()
    decided = [getattr(leaf, reference).decided for leaf in report.leaves]
    # On a GPU two leaves' worst entries had a Richardson estimate of exactly 0 (float64
    # sums round in another order there): with every term 0 there, they say "none".
    assert set(decided) <= {name, "none"} and name in decided, decided


def test_an_entry_finite_differences_contradict_is_redone_at_smaller_steps():
    """finitediff.refine: an entry the estimate at h contradicts (its error bar too small)
    is redone at h/10, h/100, h/1000 and judged by the one of those with the smallest
    error bar: a right derivative then passes; a wrong one still fails, though one of the
    smaller steps offers an agreeing estimate (with a wide error bar)."""
    h, rounding, tol, trunc = 1e-3, 1e-15, gc.RULE.tol_fd, gc.RULE.fd_trunc
    entries, straddles = np.arange(3), np.zeros(3, bool)
    truth = np.array([1.0, 2.0, -3.0])
    at_h = np.array([1.0, 2.5, -3.0])  # entry 1: truncation understated at h
    small_err = np.full(3, 1e-12)
    asked = []

    def accurate(at, step):  # the truth, with a small error bar, at every smaller step
        asked.append((tuple(at), step))
        return truth[at], np.full(len(at), 1e-12), np.zeros(len(at), bool)

    def wide(at, step):  # at h/10: agrees with the wrong 2.5, within a bar of 1; below: 2.0
        if step == h / REFINE[0]:
            return np.full(len(at), 2.5), np.full(len(at), 1.0), np.zeros(len(at), bool)
        return accurate(at, step)

    def judged(hand, fd, err, noise):
        return Comparison.of(hand, fd, tol, {"noise": noise, "trunc": trunc * err}).passed

    def refined(fd_at, hand, at_h):
        return refine(fd_at, hand, entries, at_h.copy(), small_err.copy(), straddles,
                      rounding, h, tol, trunc)

    fd, err, noise, n = refined(accurate, truth, at_h)
    assert n == 1 and fd[1] == 2.0 and judged(truth, fd, err, noise)
    assert [step for _, step in asked] == [h / f for f in REFINE]
    assert all(at == (1,) for at, _ in asked)  # only the contradicted entry
    wrong = truth + np.array([0.0, 0.5, 0.0])  # 2.5 where the derivative is 2.0
    near_truth = truth.copy()
    near_truth[1] = 2.0 + 1e-3  # the estimate at h, a little off, contradicts 2.5 too
    for fd_at in (accurate, wide):
        fd, err, noise, n = refined(fd_at, wrong, near_truth)
        assert n == 1 and not judged(wrong, fd, err, noise), fd_at.__name__
    asked.clear()  # nothing contradicted: nothing redone, nothing asked
    assert refined(accurate, truth, truth)[3] == 0 and not asked


def test_refine_redoes_only_entries_over_their_allowance_and_keeps_the_smallest_bar():
    """finitediff.refine at its edges, in exact binary numbers (tol 0, rounding / h = 1/2,
    4 x Richardson = 1/2): an entry using exactly its whole allowance is not redone, one
    using 1.5 of it is, and so is one whose estimate at h is NaN; of the smaller steps the
    one with the smallest error bar wins, rounding / step (with no truncation left) being
    smallest at the largest of them."""
    h, rounding, trunc = 2.0**-10, 2.0**-11, 4.0
    entries, straddles = np.arange(4), np.zeros(4, bool)
    hand = np.full(4, 2.0)
    at_h, err = np.array([1.0, 0.5, 2.0, np.nan]), np.full(4, 0.125)  # used 1, 1.5, 0, inf
    asked = []

    def fd_at(at, step):  # each step's estimate tells which step it came from
        asked.append((tuple(at), step))
        return 2.0 + np.full(len(at), step), np.zeros(len(at)), np.zeros(len(at), bool)

    fd, err2, noise, n = refine(fd_at, hand, entries, at_h.copy(), err.copy(), straddles,
                                rounding, h, 0.0, trunc)
    assert n == 2 and [at for at, _ in asked] == [(1, 3)] * len(REFINE)
    best = h / min(REFINE)
    for i in (1, 3):
        assert fd[i] == 2.0 + best and noise[i] == rounding / best and err2[i] == 0.0
    assert (fd[0], fd[2], noise[0], err2[0]) == (1.0, 2.0, 0.5, 0.125)


def test_of_steps_whose_error_bars_tie_the_largest_wins():
    """Ties between the smaller steps' error bars go to the largest step (the first tried,
    least rounding): with h = 1000 x 2^-20 every step and rounding / step is exact, and
    an estimate at h/10 with a Richardson estimate of 45/4 has the bar 5 + 4 x 45/4 = 50,
    as the one at h/100 with none (50 + 0)."""
    h, rounding, trunc = 1000 * 2.0**-20, 500 * 2.0**-20, 4.0
    err_at = {h / 10: 45 / 4, h / 100: 0.0, h / 1000: 0.0}

    def fd_at(at, step):
        return np.full(len(at), step), np.full(len(at), err_at[step]), np.zeros(len(at), bool)

    fd, err, noise, n = refine(fd_at, np.array([2.0]), np.arange(1), np.array([0.5]),
                               np.array([0.125]), np.zeros(1, bool), rounding, h, 0.0, trunc)
    assert n == 1 and (fd[0], err[0], noise[0]) == (h / 10, 45 / 4, 5.0)


def test_redone_entries_use_the_checks_own_hyperparameters_key_and_statistics():
    """h = 1 and 0.3 are far outside finite differences' asymptotic regime on these small
    tanh nets, so check_grads redoes some entries at smaller steps (report.refined); the
    estimates redone must use the same hyperparameters, dropout key and running
    statistics as the rest (here a reg not the spec's, dropout, and batch norm by running
    statistics), or the redone entries contradict the right gradient; and each must come
    from the step it is judged at (at h = 1 the whole of b1 is redone: its worst entry's
    share shows the step)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)) * 3, rng.integers(0, 3, 6)
    spec = mj.MLPSpec((3, 5, 3), activation="tanh", reg=0.1, dropout=0.3)
    params = mj.init_params(jax.random.key(0), spec)
    hyper = spec.hyper()._replace(reg=0.7)
    report = mj.check_grads(params, x, y, spec, h=1.0, hyper=hyper, key=jax.random.key(1))
    assert report.passed and report.refined > 0 and report.h == 1.0, str(report)
    with jax.enable_x64(True):
        f64 = partial(jnp.asarray, dtype=jnp.float64)
        rebuilt = _rebuilt(jax.tree.map(f64, params), f64(x), y, spec, 1.0,
                           jax.tree.map(f64, hyper), jax.random.key(1))
    for leaf, want in zip(report.leaves, rebuilt, strict=True):
        _assert_same(leaf.fd, want.fd, leaf.name)
    spec = mj.MLPSpec((3, 5, 3), activation="tanh", norm="batchnorm")
    params = mj.init_params(jax.random.key(0), spec)
    stats = (dict(mean=rng.normal(size=5), var=rng.uniform(0.5, 2, 5)),)
    report = mj.check_grads(params, x, y, spec, h=0.3, stats=stats)
    assert report.passed and report.refined > 0, str(report)


@pytest.mark.calibration
def test_batch_norm_on_a_batch_of_3_passes_where_the_step_was_too_coarse():
    """The --seed 15 random sweep's problem 168, draw 3 (a 6-layer GELU net, batch norm
    in training mode on a batch of 3): finite differences at h = 1e-3 contradicted the
    right derivative (share 206); redone at smaller steps, the check passes."""
    from mlp_jax import gradmatrix as gm

    config = gm.random_configs(2400, seed=15)[168]
    spec, seed = config.spec(), config.seed + 3
    with jax.enable_x64(True):
        params, x, y = gm.kink_problem(spec, seed=seed, n=config.n, on_kinks=False)
    report = mj.check_grads(params, x, y, spec, key=jax.random.key(seed))
    assert report.passed and report.refined > 0, str(report)
    assert "redone at h/10" in str(report)


def test_a_gradient_zero_by_symmetry_is_judged_by_jax_grads_measured_rounding():
    """The --seed 15 sweep's problem 8, draw 3 (a 3-layer identity net, batch norm on a
    batch of 3, hinge): beta1's gradient is 0 in exact arithmetic (batch norm below
    removes any shift of its input), so hand backprop and jax.grad return rounding only,
    made inside batch norm's backward. Judged by the loss gradient's rounding pulled back
    alone it failed (share 1.20); jax.grad's measured backward rounding allows it. A loss
    gradient off by 1 + 1e-8 still fails on the same problem."""
    from mlp_jax import gradmatrix as gm

    config = gm.random_configs(2400, seed=15)[8]
    spec, seed = config.spec(), config.seed + 3
    with jax.enable_x64(True):
        params, x, y = gm.kink_problem(spec, seed=seed, n=config.n, on_kinks=False)
    report = mj.check_grads(params, x, y, spec)
    assert report.passed, str(report)
    beta1 = next(leaf for leaf in report.leaves if leaf.name == "beta1")
    assert beta1.autodiff.decided == "backward" and beta1.autodiff.used > 0.01, str(report)
    assert abs(beta1.autodiff.reference) < 1e-14  # rounding: the layer's S is about 1e-3
    off = mj.losses.Loss("hinge_off", mj.losses.HINGE.value,
                         lambda s, y: mj.losses.HINGE.grad(s, y) * (1 + 1e-8),
                         mj.losses.BINARY_PM1, mj.losses.HINGE.kink_state)
    wrong = mj.check_grads(params, x, y, dataclasses.replace(spec, loss=off))
    assert not wrong.passed, str(wrong)


def test_a_rule_of_a_relative_tolerance_alone():
    """No absolute terms: each entry is allowed rtol (|hand| + |ref|), here 1/4 x 4.5 for
    the entry 2 vs 2.5 (used 0.5 / 1.125 = 4/9), none of it beyond the relative term."""
    c = Comparison.of(np.array([1.0, 2.0]), np.array([1.0, 2.5]), 0.25, {})
    assert (c.decided, c.worst_index, c.absolute_used) == ("rtol", (1,), 0.0)
    assert c.used == pytest.approx(4 / 9, rel=1e-15)


def test_comparisons_of_low_precision_arrays_are_computed_in_float64():
    """float32 hand and reference values are judged exactly as their float64 values are
    (the differences and allowances of float32 numbers rounded in float32 would not be)."""
    rng = np.random.default_rng(0)
    hand = rng.normal(size=50).astype(np.float32)
    ref = (hand * (1 + 1e-3 * rng.normal(size=50))).astype(np.float32)
    terms = {"noise": np.float32(1e-4)}
    got = Comparison.of(hand, ref, 1e-3, terms)
    want = Comparison.of(hand.astype(np.float64), ref.astype(np.float64), 1e-3,
                         {"noise": np.float64(np.float32(1e-4))})
    assert got == want


def test_an_entry_allowed_nothing_is_decided_by_none():
    """Every term 0 at the worst entry: any difference fails, and no term is named."""
    c = Comparison.of(np.array([1.0, 2.0]), np.array([1.0, 2.5]), 0.0, {"noise": 0.0,
                                                                        "trunc": 0.0})
    assert (c.decided, c.used, c.worst_index) == ("none", float("inf"), (1,))
    c = Comparison.of(np.array([1.0, 2.0]), np.array([1.0, 2.5]), 0.0, {"noise": 0.0,
                                                                        "trunc": 1.0})
    assert (c.decided, c.used) == ("trunc", 0.5)


def test_a_leaf_with_nothing_to_compare_passes_showing_nothing():
    """Every entry left out (all straddle a kink): nothing compared, nothing used."""
    c = Comparison.of(np.ones(3), np.zeros(3), 1e-10, {"floor": 0.0}, include=np.zeros(3, bool))
    assert (c.rel_error, c.used, c.decided, c.worst_index, c.checked, c.absolute_used) == \
        (0.0, 0.0, "-", (), 0, 0.0)
    assert np.isnan(c.hand) and np.isnan(c.reference) and c.passed


@pytest.mark.calibration
@pytest.mark.slow
def test_readme_example_runs_as_written_and_prints_what_the_readme_shows():
    check_example("## Is my derivation right?")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_killed_gradcheck_leaves_no_worker_behind():
    """SIGKILL the parent of a two-worker gradcheck: its workers end within 2 s (they
    kept both cores busy for an hour when they outlived it)."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "mlp_jax.cli", "gradcheck", "--random",
                             "400", "--workers", "2", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + guard(300)  # a hang guard
        workers = []
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            workers = [p for p in children(proc.pid)
                       if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(workers) == 2, "the workers never started"
        time.sleep(3)  # past start-up: they are checking
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=guard(60))
        time.sleep(2)
        assert not [p for p in workers if alive(p)]
    finally:
        proc.kill()
