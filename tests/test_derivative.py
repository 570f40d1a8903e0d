"""check_derivative on hand-written derivatives: the references are float64 autodiff of the
rule-free function and finite differences, so a wrong rule must fail and a right one pass
at every precision, kinks included."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

import mlp_jax as mj
from experiments.derivative_corpus import CORRECT, WRONG, _layernorm, _layernorm_vjp
from tests.readme import check_example
from tests.timeouts import guard

DTYPES = ("float64", "float32", "float16", "bfloat16")


def _case(cases, name):
    return next(c for c in cases if c.name == name)


def _draw(case, dtype, seed=0):
    with jax.enable_x64(True):
        return case.make(np.random.default_rng(seed), dtype)


@jax.custom_vjp
def softplus(x):
    return jnp.logaddexp(x, 0.0)


softplus.defvjp(lambda x: (softplus(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))


@pytest.mark.parametrize("dtype", DTYPES)
def test_correct_softplus_passes_where_jax_check_grads_cries_wolf(dtype):
    """The issue's measurement: a correct custom_vjp softplus on (5, 7) inputs of scale 3.
    jax.test_util.check_grads fails it at half precision; check_derivative passes."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        xs = [jnp.asarray(3 * rng.normal(size=(5, 7)), dtype) for _ in range(3)]
    for x in xs:
        report = mj.check_derivative(softplus, x)
        assert report.passed, report
        assert report.dtype == dtype and report.rule == "custom_vjp"
    if dtype in ("float16", "bfloat16"):
        with pytest.raises(AssertionError):
            jax.test_util.check_grads(softplus, (xs[0],), order=1, modes=("rev",))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_derivative_wrong_by_30_eps_fails_at_its_dtype(dtype):
    """(1 + 30 eps) times the right VJP: wrong by well over the dtype's rounding (the
    smallest error caught on every draw is measured by experiments/derivatives.py)."""
    eps = float(jnp.finfo(dtype).eps)
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        x = jnp.asarray(3 * rng.normal(size=(5, 7)), dtype)

    def vjp(x, g, scale=1.0):
        return g * jax.nn.sigmoid(x) * jnp.asarray(scale, x.dtype)
    ref = softplus.fun
    assert mj.check_derivative(ref, x, vjp=vjp).passed
    off = 1 + max(30 * eps, 1e-9)  # float64: 30 eps is below what autodiff resolves
    assert not mj.check_derivative(ref, x, vjp=lambda x, g: vjp(x, g) * off).passed


@pytest.mark.parametrize("name", ["relu", "abs", "jax.nn.relu (built-in custom_jvp)",
                                  "leaky relu (custom_jvp)",
                                  "maximum of two (ties to the first)"])
@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_correct_rules_on_their_kinks_pass_and_the_kinks_are_reported(name, dtype):
    f, args, options = _draw(_case(CORRECT, name), dtype)
    report = mj.check_derivative(f, *args, **options)
    assert report.passed, report
    assert report.kinks > 0  # inputs exactly on the kinks were seen as such


@pytest.mark.parametrize("name", ["leaky relu: 0 on the kink", "maximum of two: both on a tie"])
def test_a_wrong_convention_on_a_kink_is_caught(name):
    """Right everywhere but on the kink: neither side's derivative there."""
    f, args, options = _draw(_case(WRONG, name), "float64")
    assert not mj.check_derivative(f, *args, **options).passed


def test_jax_relu_at_zero_disagrees_with_its_rule_free_function_and_passes():
    """jax.nn.relu's rule says 0 at 0; autodiff of its undecorated maximum says 0.5: the
    entry is on a kink, judged one-sided, and the rule's choice (a side) passes."""
    x = jnp.array([0.0, 1.0, -1.0, 0.0])
    assert float(jax.grad(lambda x: jax.nn.relu.fun(x).sum())(x)[0]) == 0.5
    report = mj.check_derivative(jax.nn.relu, x)
    assert report.passed and report.kinks == 2


@pytest.mark.parametrize("name", [c.name for c in CORRECT[::4]])
def test_correct_corpus_passes_at_float32(name):
    case = _case(CORRECT, name)
    f, args, options = _draw(case, "float32", seed=3)
    report = mj.check_derivative(f, *args, **options)
    assert report.passed, report


@pytest.mark.parametrize("name", [c.name for c in WRONG[::3]])
def test_wrong_corpus_fails(name):
    case = _case(WRONG, name)
    f, args, options = _draw(case, "float32")
    assert not mj.check_derivative(f, *args, **options).passed


def test_without_a_rule_free_function_finite_differences_decide():
    """A plain function whose derivative JAX takes through a misplaced stop_gradient."""
    f, args, options = _draw(_case(WRONG, "softmax: stop_gradient in the wrong place"),
                             "float32")
    report = mj.check_derivative(f, *args, **options)
    assert report.reference == "none" and not report.passed
    assert all(b.autodiff.checked == 0 and b.fd.checked > 0 for b in report.blocks)


def test_implicit_backward_of_a_while_loop_uses_forward_mode_autodiff():
    f, args, options = _draw(_case(CORRECT, "tanh fixed point, implicit VJP"), "float64")
    report = mj.check_derivative(f, *args, **options)
    assert report.passed and "forward mode" in report.reference
    f, args, options = _draw(_case(WRONG, "fixed point: implicit solve not transposed"),
                             "float64")
    assert not mj.check_derivative(f, *args, **options).passed


def test_pytree_inputs_and_outputs_are_reported_per_leaf():
    f, args, options = _draw(_case(CORRECT, "dict params and tuple output (hand VJP)"),
                             "float64")
    report = mj.check_derivative(f, *args, **options)
    assert report.passed
    assert {(b.output, b.input) for b in report.blocks} == {
        (o, i) for o in ("out[0]", "out[1]") for i in ("params['W']", "params['b']", "x")}
    assert report.blocks[0].shape == (5, 3, 3, 4)  # (output leaf, input leaf)


def test_static_arguments_and_nondiff_argnums():
    f, args, options = _draw(_case(CORRECT, "x ** p, p static (nondiff_argnums)"), "float32")
    assert mj.check_derivative(f, *args, **options).passed
    with pytest.raises(mj.DerivativeInputError, match=r"dtype int.*static_argnums"):
        mj.check_derivative(f, *args)


def test_fd_entries_picks_that_many_per_input_leaf_and_refuses_nonsense():
    """As check_grads' option (finitediff.pick_entries serves both): a count per input
    leaf (every entry of a smaller leaf), and anything but 'auto', None or a positive int
    refused with one line."""
    x, W = jnp.ones((4, 5)), jnp.ones((3, 5)) / 3

    def f(x, W):
        return jnp.tanh(x @ W.T)
    report = mj.check_derivative(f, x, W, fd_entries=7)
    assert report.passed, str(report)
    assert [b.fd_entries for b in report.blocks] == [7, 7]
    assert [b.fd_entries for b in mj.check_derivative(f, x, W, fd_entries=None).blocks] \
        == [20, 15]
    for bad in (0, -1, 2.5, "all", True):
        with pytest.raises(ValueError, match="fd_entries must be 'auto', None"):
            mj.check_derivative(f, x, W, fd_entries=bad)


def test_more_input_entries_than_a_chunk_are_differenced_in_chunks_that_line_up():
    """100 input entries: finite differences in two eager chunks of 64 (the second padded),
    stitched back in order: every entry's estimate is its own (a right rule passes), and a
    rule 1% off at entry 90 alone, in the second chunk, is found there."""
    x = jnp.asarray(3 * np.random.default_rng(0).normal(size=100), jnp.float32)
    assert mj.derivative.FD_CHUNK == 64 and x.size <= mj.derivative.FD_ALL

    def vjp(x, g, off=1.0):
        return g * jax.nn.sigmoid(x) * jnp.where(jnp.arange(100) == 90, off, 1.0)
    report = mj.check_derivative(softplus.fun, x, vjp=vjp)
    assert report.passed and report.blocks[0].fd_entries == 100, str(report)
    report = mj.check_derivative(softplus.fun, x, vjp=lambda x, g: vjp(x, g, 1.01))
    assert not report.passed and report.blocks[0].fd.worst_index == (90, 90), str(report)


@pytest.mark.calibration
def test_a_large_input_is_checked_by_projections_and_still_catches_an_error():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(300, 300)), jnp.float32)
    gamma, beta = jnp.ones(300, jnp.float32), jnp.zeros(300, jnp.float32)
    report = mj.check_derivative(_layernorm, x, gamma, beta, vjp=_layernorm_vjp)
    assert report.passed and report.mode == "3 random projections"
    assert report.blocks[0].fd_entries == mj.derivative.FD_SAMPLE

    def wrong(x, gamma, beta, g):
        dx, dg, db = _layernorm_vjp(x, gamma, beta, g)
        return dx.at[7, 3].multiply(1.01), dg, db  # one entry of 90,000, 1% off
    assert not mj.check_derivative(_layernorm, x, gamma, beta, vjp=wrong).passed


def test_assert_derivative_raises_with_the_report():
    @jax.custom_vjp
    def square(x):
        return x ** 2
    square.defvjp(lambda x: (square(x), x), lambda x, g: (g * x,))  # 2x expected
    with pytest.raises(AssertionError, match="FAIL"):
        mj.assert_derivative(square, jnp.arange(1.0, 4.0))
    assert mj.assert_derivative(softplus, jnp.arange(1.0, 4.0)).passed


def test_bad_input_is_one_clear_line():
    x = jnp.ones(3)

    def branchy(x):
        return x if x.sum() > 0 else -x
    with pytest.raises(mj.DerivativeInputError, match="cannot be traced by JAX"):
        mj.check_derivative(branchy, x)
    with pytest.raises(mj.DerivativeInputError, match=r"input x has dtype int"):
        mj.check_derivative(lambda x: x * 2, jnp.arange(3))
    with pytest.raises(mj.DerivativeInputError, match=r"vjp returned 1 cotangents for 2"):
        mj.check_derivative(lambda a, b: a * b, x, x, vjp=lambda a, b, g: (g * b,))
    with pytest.raises(mj.DerivativeInputError,
                       match=r"cotangent for b has shape \(2,\); b has shape \(3,\)"):
        mj.check_derivative(lambda a, b: a * b, x, x, vjp=lambda a, b, g: (g * b, g[:2]))
    with pytest.raises(mj.DerivativeInputError, match=r"cotangent for p has structure"):
        mj.check_derivative(lambda p: p["w"] * 2, {"w": x}, vjp=lambda p, g: 2 * g)
    with pytest.raises(mj.DerivativeInputError, match="the derivative rule failed"):
        mj.check_derivative(lambda a: a * 2, x, vjp=lambda a, g: g @ jnp.ones((2, 2)))
    with pytest.raises(mj.DerivativeInputError, match="not linear in the input tangents"):
        mj.check_derivative(lambda a: a * 2, x, jvp=lambda p, t: (p[0] * 2, t[0] ** 2))
    with pytest.raises(mj.DerivativeInputError, match="f must be a function"):
        mj.check_derivative(3.0, x)
    for bad in (branchy,):  # every message is one line
        try:
            mj.check_derivative(bad, x)
        except mj.DerivativeInputError as e:
            assert "\n" not in str(e)


USER_MODULE = '''
import jax, jax.numpy as jnp

@jax.custom_vjp
def layer(x, w):
    return jnp.tanh(x @ w)

def _bwd(r, g):
    x, w = r
    dz = g * (1 - jnp.tanh(x @ w) ** 2)
    return dz @ w.T, x.T @ WRONG

layer.defvjp(lambda x, w: (layer(x, w), (x, w)), _bwd)
'''


@pytest.mark.slow
@pytest.mark.parametrize("wrong", [False, True])
def test_cli_checks_a_users_file(tmp_path, wrong):
    (tmp_path / "mine.py").write_text(USER_MODULE.replace("WRONG", "g" if wrong else "dz"))
    proc = subprocess.run([sys.executable, "-m", "mlp_jax.cli", "gradcheck", "--function",
                           f"{tmp_path / 'mine.py'}:layer", "--shapes", "4,3", "3,2",
                           "--dtype", "bfloat16", "--draws", "2"],
                          capture_output=True, text=True, timeout=guard(600))
    assert proc.returncode == (1 if wrong else 0), proc.stdout + proc.stderr
    assert f"2 draws at bfloat16, {2 if wrong else 0} failed" in proc.stdout
    assert ("FAIL" in proc.stdout) == wrong


@pytest.mark.parametrize("argv,match", [
    (["--function", "nomodule_xyz:f", "--shapes", "3"], "cannot import nomodule_xyz"),
    (["--function", "math:nothing", "--shapes", "3"], "math has no nothing"),
    (["--function", "math:sqrt"], "--function needs --shapes"),
    (["--shapes", "3"], "--shapes, --dtype, --rtol, --atol, --order, --no-batched and "
                        "--repeats go with --function"),
    (["--order", "2"], "go with --function"),
    (["--function", "numpy:tanh", "--shapes", "3,x"], "expected sizes like 8,3"),
])
def test_cli_function_bad_options_are_one_line(argv, match, capsys):
    from mlp_jax import cli

    try:
        code = cli.main(["gradcheck", *argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and match in err and err.count("\n") == 1, err


@pytest.mark.calibration
@pytest.mark.slow
def test_readme_example_runs_as_written_and_prints_what_the_readme_shows():
    check_example("## Is my derivative right?")
