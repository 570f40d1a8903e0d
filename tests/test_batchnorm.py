"""Batch norm: the forward in both modes against Ioffe & Szegedy's algorithms written in
numpy, the running statistics against a numpy re-computation of the exponential averages,
both modes' hand backward under the gradient check, the statistics' contract, and a run
end to end (fit, checkpoint, sweep, the command line)."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import labels_for

import mlp_jax as mj
from mlp_jax import checkpoint, cli, data, diagnostics, network, optim, sweep, train
from mlp_jax.backprop import backprop_and_stats

EPS = 1e-5


def _bn_train_numpy(z, gamma, beta, eps):
    """Ioffe & Szegedy 2015, Algorithm 1, one feature at a time over the mini-batch:
    mu_B = 1/m sum x_i, sigma_B^2 = 1/m sum (x_i - mu_B)^2, xhat_i = (x_i - mu_B) /
    sqrt(sigma_B^2 + eps), y_i = gamma xhat_i + beta. Also returns (mu_B, sigma_B^2)."""
    m, H = z.shape
    out, mus, variances = np.empty_like(z), np.empty(H), np.empty(H)
    for k in range(H):
        col = [z[i, k] for i in range(m)]
        mu = sum(col) / m
        var = sum((v - mu) ** 2 for v in col) / m
        for i in range(m):
            out[i, k] = gamma[k] * (col[i] - mu) / np.sqrt(var + eps) + beta[k]
        mus[k], variances[k] = mu, var
    return out, mus, variances


def _bn_inference_numpy(z, gamma, beta, mean, var, eps):
    """Algorithm 2, step 11: y = gamma / sqrt(Var[x] + eps) * x + (beta - gamma E[x] /
    sqrt(Var[x] + eps)), a fixed affine map per feature (E, Var: the running averages)."""
    scale = gamma / np.sqrt(var + eps)
    return scale * z + (beta - scale * mean)


def _perturbed(spec, seed=0):
    """Params with gamma, beta and the output bias away from their initial 1 and 0."""
    rng = np.random.default_rng(seed)
    params = mj.init_params(jax.random.key(seed), spec)
    return tuple({k: np.asarray(v) + 0.3 * rng.normal(size=np.shape(v)) for k, v in p.items()}
                 for p in params)


def _numpy_forward(params, x, stats=None, eps=EPS):
    """The tanh network in numpy: training mode (stats None) returns each layer's batch
    (mean, var) too; evaluation mode normalizes by ``stats``."""
    h, moments = x, []
    for layer, p in enumerate(params[:-1]):
        z = h @ p["W"].T
        if stats is None:
            z, mu, var = _bn_train_numpy(z, p["gamma"], p["beta"], eps)
            moments.append((mu, var))
        else:
            s = stats[layer]
            z = _bn_inference_numpy(z, p["gamma"], p["beta"], np.asarray(s["mean"]),
                                    np.asarray(s["var"]), eps)
        h = np.tanh(z)
    return h @ params[-1]["W"].T + params[-1]["b"], moments


def test_forward_in_both_modes_matches_the_papers_algorithms(x64):
    spec = mj.MLPSpec((4, 6, 5, 3), activation="tanh", norm="batchnorm", dtype="float64")
    params = _perturbed(spec)
    x = np.random.default_rng(1).normal(size=(7, 4))
    expected, moments = _numpy_forward(params, x)
    scores, stats = mj.forward(params, x, spec, train=True, stats=mj.init_stats(spec))
    np.testing.assert_allclose(scores, expected, rtol=1e-12, atol=1e-12)
    running = [dict(mean=0.1 * mu, var=0.9 + 0.1 * var) for mu, var in moments]  # m = 0.9
    for got, want in zip(stats, running):
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-14, atol=1e-15)
    expected_eval, _ = _numpy_forward(params, x, stats=running)
    np.testing.assert_allclose(mj.forward(params, x, spec, stats=stats), expected_eval,
                               rtol=1e-12, atol=1e-12)
    # evaluation treats every example on its own; training couples them through the batch
    np.testing.assert_allclose(mj.forward(params, x[:1], spec, stats=stats), expected_eval[:1],
                               rtol=1e-12, atol=1e-12)
    assert not np.allclose(mj.forward(params, x[:3], spec, train=True), expected[:3])
    # a batch of 2, the smallest training allows, is normalized by its own statistics too
    np.testing.assert_allclose(mj.forward(params, x[:2], spec, train=True),
                               _numpy_forward(params, x[:2])[0], rtol=1e-12, atol=1e-12)


def test_running_statistics_after_k_steps_equal_numpys_exponential_averages(x64):
    """Six SGD steps on different minibatches: before each, numpy re-runs the batch with
    the current params for each layer's batch mean and variance, and updates its own
    averages, m * running + (1 - m) * batch; the state's statistics agree to 1e-12."""
    spec = mj.MLPSpec((5, 7, 6, 3), activation="tanh", norm="batchnorm", norm_momentum=0.8,
                      dtype="float64")
    opt = optim.sgd(0.5)
    state = train.init_state(jax.random.key(0), spec, opt)
    state = state._replace(params=jax.tree.map(jnp.asarray, _perturbed(spec)))
    step = train.make_train_step(spec, opt)
    rng = np.random.default_rng(2)
    running = [dict(mean=np.zeros(h), var=np.ones(h)) for h in spec.sizes[1:-1]]
    for _ in range(6):
        x, y = rng.normal(size=(16, 5)), rng.integers(0, 3, 16)
        params = jax.tree.map(np.asarray, state.params)
        _, moments = _numpy_forward(params, x)
        for r, (mu, var) in zip(running, moments):
            r["mean"] = 0.8 * r["mean"] + 0.2 * mu
            r["var"] = 0.8 * r["var"] + 0.2 * var
        state, _ = step(state, jnp.asarray(x), jnp.asarray(y))
    assert int(state.step) == 6
    for got, want in zip(state.stats, running):
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12)
    # evaluation uses them: evaluate's loss and the numpy network on those averages
    x, y = rng.normal(size=(9, 5)), rng.integers(0, 3, 9)
    scores, _ = _numpy_forward(jax.tree.map(np.asarray, state.params), x, stats=running)
    p = np.exp(scores - scores.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    value, acc = train.evaluate(state.params, x, y, spec, stats=state.stats)
    np.testing.assert_allclose(value, -np.mean(np.log(p[np.arange(9), y])), rtol=1e-12)
    assert acc == np.mean(scores.argmax(1) == y)


@pytest.mark.parametrize("act,loss_name", [("relu", "softmax"), ("sigmoid", "svm"),
                                           ("gelu", "logistic"), ("elu", "squared")])
def test_hand_backprop_passes_the_gradient_check_in_both_modes(act, loss_name):
    """Training mode (the classic derivation, statistics of the batch) and evaluation mode
    (an affine map by the running statistics); gamma away from its initial 1, so that a
    gradient divided by gamma rather than multiplied shows."""
    C = 1 if loss_name == "logistic" else 3
    spec = mj.MLPSpec((4, 6, 6, C), activation=act, loss=loss_name, norm="batchnorm",
                      reg=0.1, dropout=0.3)
    params = _perturbed(spec, seed=1)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 4)), labels_for(spec, 9, rng)
    report = mj.check_grads(params, x, y, spec, key=jax.random.key(2))
    assert report.passed, report
    assert "norm=batchnorm (batch statistics)" in report.spec_summary
    assert [sorted(p) for p in params] == [["W", "beta", "gamma"]] * 2 + [["W", "b"]]
    stats = tuple(dict(mean=rng.normal(size=6), var=rng.uniform(0.5, 2, 6)) for _ in range(2))
    report = mj.check_grads(params, x, y, spec, stats=stats)
    assert report.passed, report
    assert "norm=batchnorm (running statistics)" in report.spec_summary


def test_in_training_mode_the_checks_leave_running_statistics_alone():
    """A key makes check_grads check training mode, where batch norm normalizes by the
    batch's own statistics: running statistics given beside it change nothing, the
    report is the one without them (the public loss and backprop, given stats= in
    training, return them updated beside the loss: the checks must not take those
    tuples for the loss). The same for finite differences in training mode."""
    spec = mj.MLPSpec((4, 6, 3), activation="tanh", norm="batchnorm")
    params = _perturbed(spec, seed=2)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 4)), labels_for(spec, 5, rng)
    stats = (dict(mean=rng.normal(size=6), var=rng.uniform(0.5, 2, 6)),)
    key = jax.random.key(0)
    without = mj.check_grads(params, x, y, spec, key=key)
    given = mj.check_grads(params, x, y, spec, key=key, stats=stats)
    assert given.passed and str(given) == str(without)
    with jax.enable_x64(True):
        params, x = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, x))
        fd = [mj.finite_differences(params, x, y, spec, train=True, entries=np.arange(30),
                                    **kw) for kw in ({}, {"stats": stats})]
    for a, b in zip(*fd, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_gradient_check_refuses_a_batch_of_2_and_passes_3():
    """At N=2 every gradient below a batch-norm layer is nearly 0 and the three references
    disagree in their rounding (random sweep seed 14's 9 false alarms, e.g. this identity
    / svm net); refused with why, while a batch of 3 of the same net passes, and
    evaluation mode (statistics held fixed) is checked at 2."""
    spec = mj.MLPSpec((24, 26, 3, 12, 9), activation="identity", loss="svm",
                      norm="batchnorm", reg=1e-3)
    params = mj.init_params(jax.random.key(0), spec)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 24)), labels_for(spec, 3, rng)
    with pytest.raises(ValueError) as e:
        mj.check_grads(params, x[:2], y[:2], spec)
    assert str(e.value) == (
        "batch norm in training mode on a batch of 2 normalizes every feature to about ±1 "
        "whatever its input, so every gradient below it is nearly 0 (but for the norm's eps) "
        "and hand backprop, jax.grad and finite differences each return their own rounding "
        "there, more than the pass rule can bound: check it on a batch of 3 or more (or in "
        "evaluation mode, with stats=)")
    report = mj.check_grads(params, x, y, spec)
    assert report.passed and report.h == 1e-3  # the documented default step
    assert mj.check_grads(params, x[:2], y[:2], spec, stats=mj.init_stats(spec)).passed


@pytest.mark.parametrize("dtype,want", [("bfloat16", jnp.float32), ("float16", jnp.float32),
                                         ("float32", jnp.float32), ("float64", jnp.float64)])
def test_running_statistics_are_float32_at_least_and_stay_so(dtype, want, x64):
    """Half-precision params keep their running statistics in float32 (an average of
    many batches in bfloat16 would round away each small update), float64 params in
    float64; with float64 enabled, where the default float is float64, and after a
    training step (the batch moments come in the params' dtype)."""
    spec = mj.MLPSpec((4, 6, 5, 3), norm="batchnorm", dtype=dtype)
    stats = mj.init_stats(spec)
    assert [sorted(s) for s in stats] == [["mean", "var"]] * 2
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 4)), rng.integers(0, 3, 8)
    params = mj.init_params(jax.random.key(0), spec)
    _, _, after = mj.backprop(params, x, y, spec, train=True, stats=stats)
    for s in (*stats, *after):
        assert s["mean"].dtype == s["var"].dtype == want, s
    for training in (True, False):  # the scores stay in the params' dtype (eps too)
        scores = mj.forward(params, x, spec, train=training, stats=stats)
        assert (scores[0] if training else scores).dtype == jnp.dtype(dtype), training


def test_a_constant_feature_normalizes_to_beta_and_stays_finite(x64):
    spec = mj.MLPSpec((3, 4, 2), norm="batchnorm", dtype="float64")
    params = [dict(p) for p in _perturbed(spec)]
    params[0]["W"] = params[0]["W"].copy()
    params[0]["W"][1] = 0.0  # unit 1's input is 0 for every example: variance 0
    x, y = np.random.default_rng(0).normal(size=(5, 3)), np.array([0, 1, 0, 1, 1])
    _, cache = network.forward_with_cache(tuple(params), x, spec, train=True)
    np.testing.assert_array_equal(np.asarray(cache[0]["z"])[:, 1], params[0]["beta"][1])
    value, grads = mj.backprop(tuple(params), x, y, spec, train=True)
    assert np.isfinite(float(value))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_a_batch_of_one_is_an_error_that_says_why():
    spec = mj.MLPSpec((2, 8, 3), norm="batchnorm")
    params = mj.init_params(jax.random.key(0), spec)
    with pytest.raises(ValueError) as e:
        mj.backprop(params, np.ones((1, 2)), np.array([0]), spec, train=True)
    assert str(e.value) == (
        "batch norm in training mode needs at least 2 examples per batch; got 1: one "
        "example has variance 0, so every unit would be normalized to its beta and nothing "
        "would be learned from x (for one example, use evaluation mode with the running "
        "statistics, or layer norm)")
    ds = data.spiral(points_per_class=20)  # 60 examples: batches of 59 leave one
    with pytest.raises(ValueError, match=r"the last minibatch of each epoch \(60 % 59 = 1 "
                                         r"examples\) is a batch of 1"):
        train.fit(spec, ds, optim.sgd(0.1), epochs=1, batch_size=59, key=jax.random.key(0))
    with pytest.raises(ValueError, match="a minibatch of 1 examples"):
        train.fit(spec, ds, optim.sgd(0.1), epochs=1, batch_size=1, key=jax.random.key(0))


def test_the_statistics_contract():
    """Evaluation needs stats (a clear error without); training returns them updated when
    given; nets without batch norm have () and keep their signatures."""
    spec = mj.MLPSpec((2, 8, 3), norm="batchnorm")
    params = mj.init_params(jax.random.key(0), spec)
    x, y = np.random.default_rng(0).normal(size=(6, 2)), np.array([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="evaluation mode normalizes by the running "
                                         "statistics: pass stats="):
        mj.forward(params, x, spec)
    with pytest.raises(ValueError, match=r"stats must be 1 dicts of 'mean' and 'var' shaped "
                                         r"\[\(8,\)\]"):
        mj.loss(params, x, y, spec, stats=({"mean": np.zeros(3), "var": np.ones(3)},))
    with pytest.raises(ValueError, match="stats must be 1 dicts"):  # checked in training too
        mj.backprop(params, x, y, spec, train=True, stats=mj.init_stats(
            mj.MLPSpec((2, 8, 8, 3), norm="batchnorm")))
    stats = mj.init_stats(spec)
    assert len(mj.backprop(params, x, y, spec, train=True, stats=stats)) == 3
    assert len(mj.loss(params, x, y, spec, train=True, stats=stats)) == 2
    assert len(mj.backprop(params, x, y, spec, train=True)) == 2  # stats not asked for
    with pytest.raises(ValueError) as e:
        mj.per_example_backprop(params, x, y, spec)
    assert str(e.value) == ("per-example gradients are not defined with batch norm: in "
                            "training every example's output depends on the whole batch "
                            "through its statistics")
    plain = mj.MLPSpec((2, 8, 3))
    assert mj.init_stats(plain) == () and train.init_state(
        jax.random.key(0), plain, optim.sgd(0.1)).stats == ()
    with pytest.raises(ValueError, match="norm_momentum must be in"):
        mj.MLPSpec((2, 8, 3), norm="batchnorm", norm_momentum=1.0)
    with pytest.raises(ValueError, match="with maxout is not supported"):
        mj.MLPSpec((2, 8, 3), norm="batchnorm", activation="maxout")


@pytest.mark.parametrize("norm", [None, "batchnorm"])
@pytest.mark.parametrize("training", [False, True])
def test_the_internal_functions_always_return_the_statistics(norm, training):
    """loss_and_stats and backprop_and_stats: (loss, stats) and (loss, grads, stats) in
    every mode, for every net; their values are the public functions', and their
    statistics are the public ones' where those return them (else as given)."""
    spec = mj.MLPSpec((3, 8, 3), norm=norm, dropout=0.2)
    params = mj.init_params(jax.random.key(0), spec)
    x, y = np.random.default_rng(1).normal(size=(6, 3)), np.array([0, 1, 2, 0, 1, 2])
    stats, key = mj.init_stats(spec), jax.random.key(3)
    hyper = spec.hyper()._replace(reg=0.3)  # not the spec's: the given hyper is the one used
    kw = dict(hyper=hyper, key=key, train=training, stats=stats)
    value, new = network.loss_and_stats(params, x, y, spec, hyper, key, training, stats)
    hand_value, grads, hand_new = backprop_and_stats(params, x, y, spec, hyper, key, training,
                                                     stats)
    public_loss, public_backprop = mj.loss(params, x, y, spec, **kw), mj.backprop(params, x, y,
                                                                                   spec, **kw)
    if training:  # stats given: the public forms carry them too
        (public_value, public_new), (_, public_grads, _) = public_loss, public_backprop
        chex.assert_trees_all_close(new, public_new)
        chex.assert_trees_all_close(hand_new, public_new)
        if norm:  # updated: the batch moved them
            assert not np.allclose(new[0]["mean"], stats[0]["mean"])
    else:
        public_value, (_, public_grads) = public_loss, public_backprop
        assert new is stats and hand_new is stats
    assert float(value) == float(public_value) and float(hand_value) == float(public_value)
    chex.assert_trees_all_close(grads, public_grads)
    assert float(value) != float(mj.loss(params, x, y, spec, key=key, train=training,
                                         stats=stats if not training else None))


def test_fit_checkpoint_and_sweep_carry_the_statistics(tmp_path):
    """fit updates the statistics and evaluates by them (diagnostics too); a checkpoint
    holds them (final and best) bitwise; jax.grad's run equals the hand backprop's,
    statistics included; a sweep's configuration equals the same fit."""
    ds = data.spiral()
    spec = mj.MLPSpec((2, 32, 32, 3), norm="batchnorm")
    path = str(tmp_path / "c.npz")
    kw = dict(epochs=15, batch_size=100, key=jax.random.key(0), progress=False)
    probe = diagnostics.Diagnostics(spec, optim.adam(1e-2), ds.X_train[:50], ds.y_train[:50])
    result = train.fit(spec, ds, optim.adam(1e-2), checkpoint_path=path, callbacks=[probe],
                       **kw)
    assert result.history[-1]["train_acc"] > 0.85
    assert len(result.history[-1]["grad_norm"]) == 3  # diagnostics by the statistics
    stats = result.state.stats
    assert not np.allclose(stats[0]["var"], 1.0)
    acc = train.evaluate(result.state.params, ds.X_train, ds.y_train, spec, stats=stats)[1]
    assert acc == result.history[-1]["train_acc"]
    loaded = checkpoint.load(path, template=result.state, spec=spec)
    chex.assert_trees_all_equal(loaded.state.stats, stats)
    chex.assert_trees_all_equal(loaded.best_stats, result.best_stats)
    chex.assert_trees_all_equal(checkpoint.load_params(path, which="final").stats, stats)
    auto = train.fit(spec, ds, optim.adam(1e-2), grad="autodiff", **kw)
    chex.assert_trees_all_close(auto.state.stats, stats, atol=1e-4)
    chex.assert_trees_all_close(auto.state.params, result.state.params, atol=1e-4)
    swept = sweep.sweep(spec, ds, lambda lr: optim.adam(lr), sweep.grid(lrs=(1e-2, 3e-3)),
                        epochs=15, batch_size=100)
    chex.assert_trees_all_close(swept.stats_of(0), stats, atol=1e-4)
    chex.assert_trees_all_close(swept.params_of(0), result.state.params, atol=1e-4)
    rows = sweep.evaluate_all(swept, ds.X_train, ds.y_train, spec)
    assert rows[0, 1] == pytest.approx(acc, abs=0.01)


def test_cli_trains_evaluates_and_predicts_with_batch_norm(tmp_path, capsys):
    """--norm batchnorm: the summary, eval and predict all use the running statistics."""
    out = tmp_path / "run"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.savez(tmp_path / "new.npz", X=X[:50], y=y[:50])
    assert cli.main(["train", "--data", str(tmp_path / "d.npz"), "--norm", "batchnorm",
                     "--epochs", "10", "--batch-size", "50", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    ck = checkpoint.load_params(str(out / "checkpoint.npz"), which="final")
    assert len(ck.stats) == 1 and ck.spec.norm == "batchnorm" and ck.which == "final"
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(out)]) == 0  # the best params, their stats
    assert f"val_acc {summary['best_val_params_val_acc']:.4f}" in capsys.readouterr().out
    assert cli.main(["eval", "--checkpoint", str(out), "--params", "final"]) == 0
    out_final = capsys.readouterr().out
    assert "(final params)" in out_final and f"val_acc {summary['val_acc']:.4f}" in out_final
    assert cli.main(["predict", "--checkpoint", str(out), "--data", str(tmp_path / "new.npz"),
                     "--out", str(tmp_path / "p.csv")]) == 0
    best = checkpoint.load_params(str(out / "checkpoint.npz"))
    Xs = best.preprocessing.transform(X[:50])
    scores = mj.forward(best.params, Xs, best.spec, stats=best.stats)
    lines = (tmp_path / "p.csv").read_text().splitlines()
    predicted = [int(line.split(",")[0]) for line in lines[1:]]
    assert predicted == list(np.asarray(jnp.argmax(scores, 1)))
    assert summary["train_acc"] > 0.9
