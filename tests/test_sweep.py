"""Vmapped sweeps, per-example gradients, and that the compiled step never retraces."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlp_jax as mj
from mlp_jax import data, optim, sweep, train
from mlp_jax.backprop import per_example_backprop


def test_sweep_matches_individual_fits():
    """Seeds x lr x reg x dropout x input noise in one program == each config trained alone
    by fit with that Hyper (to rounding: the batched products round differently, which the
    dynamics amplify slowly)."""
    ds = data.spiral()
    spec = mj.MLPSpec((2, 32, 3), init="normal", weight_scale=0.01, dropout=0.5,
                      input_noise=0.5)
    configs = sweep.grid(seeds=(0, 1), lrs=(0.1, 0.05), regs=(1e-3, 1e-2), dropouts=(0.0, 0.2),
                         input_noises=(0.0, 0.1))
    result = sweep.sweep(spec, ds, lambda lr: optim.momentum(lr, 0.9), configs, epochs=20,
                         batch_size=100)
    assert result.losses.shape == (32, 20, 3)
    for i in (0, 7, 13, 26):
        c = configs[i]
        hyper = mj.Hyper(c["reg"], c["dropout"], c["input_noise"])
        one = train.fit(spec, ds, optim.momentum(c["lr"], 0.9), epochs=20, batch_size=100,
                        key=jax.random.key(c["seed"]), hyper=hyper, eval_every=20,
                        progress=False)
        chex.assert_trees_all_close(result.params_of(i), one.state.params, atol=1e-4)
    losses = result.final_loss()
    assert len(set(np.round(losses, 6))) == 32  # every config really differs


def test_per_example_gradients_match_vmap_of_jax_grad(x64):
    spec = mj.MLPSpec((5, 7, 4), activation="gelu", loss="svm", reg=0.05, dtype="float64")
    params = mj.init_params(jax.random.key(0), spec)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 5)), rng.integers(0, 4, 9)
    losses, grads = per_example_backprop(params, x, y, spec)
    ref = jax.vmap(lambda xi, yi: jax.grad(mj.loss)(params, xi[None], yi[None], spec))(
        jnp.asarray(x), jnp.asarray(y))
    chex.assert_trees_all_close(grads, ref, rtol=1e-12, atol=1e-14)
    assert grads[0]["W"].shape == (9, 7, 5)
    # each carries the penalty gradient once, so their plain mean is the batch gradient
    _, batch = mj.backprop(params, x, y, spec)
    np.testing.assert_allclose(jnp.mean(grads[0]["W"], 0), batch[0]["W"], rtol=1e-12)
    # hyper's reg replaces the spec's, as in backprop
    hyper = spec.hyper()._replace(reg=0.3)
    _, grads = per_example_backprop(params, x, y, spec, hyper=hyper)
    _, batch = mj.backprop(params, x, y, spec, hyper=hyper)
    np.testing.assert_allclose(jnp.mean(grads[0]["W"], 0), batch[0]["W"], rtol=1e-12)


def test_step_does_not_retrace_for_new_lr_reg_seed_or_batches():
    spec = mj.MLPSpec((4, 8, 3), dropout=0.1)
    traces = []

    @chex.assert_max_traces(n=1)
    def step(state, x, y, reg, lr):
        traces.append(1)
        return train.train_step(spec, optim.sgd(lr), "backprop", state, x, y,
                                spec.hyper()._replace(reg=reg))

    jstep = jax.jit(step)
    rng = np.random.default_rng(0)
    for seed, lr, reg in [(0, 0.1, 0.0), (1, 0.01, 1e-3), (2, 0.5, 0.3)]:
        state = train.init_state(jax.random.key(seed), spec, optim.sgd(lr))
        for _ in range(3):  # fresh batches every call
            x = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
            y = jnp.asarray(rng.integers(0, 3, 16))
            state, _ = jstep(state, x, y, jnp.float32(reg), jnp.float32(lr))
    assert len(traces) == 1


def test_sweep_compiles_once_for_any_hyperparameters():
    """Seed, lr, reg, dropout and input noise all vary per config; one compiled program, and
    each really changes the result."""
    ds = data.spiral(points_per_class=20)
    spec = mj.MLPSpec((2, 8, 3), dropout=0.1, input_noise=0.1)
    run = sweep.make_sweep(spec, lambda lr: optim.sgd(lr), epochs=2, batch_size=60)
    X, Y = jnp.asarray(ds.X_train), jnp.asarray(ds.y_train)
    rows = [(0, 0.1, 0.0, 0.0, 0.0), (1, 0.1, 0.0, 0.0, 0.0), (0, 0.3, 0.0, 0.0, 0.0),
            (0, 0.1, 0.5, 0.0, 0.0), (0, 0.1, 0.0, 0.5, 0.0), (0, 0.1, 0.0, 0.0, 0.5)]
    # one column each: seed, lr, reg, dropout, input noise
    seeds, lrs, *hyper = (np.array(col) for col in zip(*rows))
    keys = jnp.stack([jax.random.key(int(s)) for s in seeds])
    for scale in (1.0, 0.5):  # new values, same shapes: no new compile
        states, losses = run(keys, jnp.asarray(lrs * scale, jnp.float32),
                             mj.Hyper(*(jnp.asarray(h * scale, jnp.float32) for h in hyper)), X, Y)
        final = np.asarray(losses)[:, -1].mean(axis=1)
        assert all(final[i] != final[0] for i in range(1, len(rows))), final
    assert run._cache_size() == 1


def test_sweep_refuses_a_rate_the_specs_program_does_not_have():
    """Dropout and input noise are architecture: a spec without them cannot sweep them."""
    ds = data.spiral(points_per_class=20)
    for field in ("dropout", "input_noise"):
        with pytest.raises(ValueError, match=rf"^a config sets {field}=0.3 but the spec has no "
                                             rf"{field} \(MLPSpec\({field}=0\)\)"):
            sweep.sweep(mj.MLPSpec((2, 8, 3)), ds, lambda lr: optim.sgd(lr),
                        [dict(seed=0, lr=0.1, **{field: 0.3})], epochs=1, batch_size=60)
    r = sweep.sweep(mj.MLPSpec((2, 8, 3)), ds, lambda lr: optim.sgd(lr),
                    [dict(seed=0, lr=0.1, dropout=0.0)], epochs=1, batch_size=60)
    assert r.losses.shape == (1, 1, 1)  # a rate of 0 asks for nothing the spec lacks


def test_sweep_rejects_empty():
    with pytest.raises(ValueError, match="at least one"):
        sweep.sweep(mj.MLPSpec((2, 3)), data.spiral(), optim.sgd, [], epochs=1, batch_size=10)


def test_grid_defaults_keep_the_specs_reg_and_dropout():
    ds = data.spiral(points_per_class=20)
    spec = mj.MLPSpec((2, 8, 3), reg=0.5)
    r = sweep.sweep(spec, ds, lambda lr: optim.sgd(lr), sweep.grid(lrs=(0.1,)), epochs=5,
                    batch_size=60)
    one = train.fit(spec, ds, optim.sgd(0.1), epochs=5, batch_size=60, key=jax.random.key(0),
                    eval_every=5, progress=False)
    chex.assert_trees_all_close(r.params_of(0), one.state.params, atol=1e-5)


def test_chunked_sweep_is_the_whole_sweep_and_reports_each_chunk():
    """Chunks of 2 over 5 configs (the last padded): same params and losses as one call,
    the callback sees each chunk's configs in order, and one compilation serves them."""
    ds = data.spiral(points_per_class=20)
    spec = mj.MLPSpec((2, 8, 3), dropout=0.1)
    configs = sweep.grid(seeds=(0, 1, 2, 3, 4), lrs=(0.2,), dropouts=(0.1,))
    whole = sweep.sweep(spec, ds, lambda lr: optim.sgd(lr), configs, epochs=3, batch_size=30,
                        mesh=None)
    seen, traces = [], []

    def make(lr):
        traces.append(lr)
        return optim.sgd(lr)

    parts = sweep.sweep(spec, ds, make, configs, epochs=3, batch_size=30, mesh=None, chunk=2,
                        callback=lambda start, part: seen.append((start, part.configs,
                                                                  part.losses.shape)))
    assert [(s, len(c), shape) for s, c, shape in seen] == [
        (0, 2, (2, 3, 2)), (2, 2, (2, 3, 2)), (4, 1, (1, 3, 2))]
    assert [c for _, cs, _ in seen for c in cs] == configs
    assert len(traces) == 1  # traced once: every chunk, the padded last one too, reuses it
    chex.assert_trees_all_close(parts.params, whole.params, atol=1e-6)
    np.testing.assert_allclose(parts.losses, whole.losses, atol=1e-6)


def test_random_search_draws_rates_on_a_log_scale_and_the_rest_uniformly():
    configs = sweep.random_search(400, seed=3, seeds=(0,), lr=(1e-4, 1e-1), reg=(0.0, 1e-2),
                                  dropout=(0.1, 0.5), input_noise=(0.2, 0.2))
    lr, reg, p, noise = (np.array([c[k] for c in configs])
                         for k in ("lr", "reg", "dropout", "input_noise"))
    assert lr.min() >= 1e-4 and lr.max() <= 1e-1
    assert abs(np.log10(lr).mean() + 2.5) < 0.1  # log-uniform: the mean exponent is central
    assert reg.min() >= 1e-6 and reg.max() <= 1e-2  # from 0: four decades below the top
    assert abs(p.mean() - 0.3) < 0.02 and p.min() >= 0.1 and p.max() <= 0.5
    assert (noise == 0.2).all()  # lo == hi: fixed
    assert all(float(f"{v:.3g}") == v for v in lr)
    assert sweep.random_search(400, seed=3, seeds=(0,), lr=(1e-4, 1e-1), reg=(0.0, 1e-2),
                               dropout=(0.1, 0.5), input_noise=(0.2, 0.2)) == configs
    two = sweep.random_search(2, seed=0, seeds=(5, 6), lr=(1e-3, 1e-2))
    assert [c["seed"] for c in two] == [5, 6, 5, 6] and two[0]["lr"] == two[1]["lr"]
    assert two[0]["reg"] is None  # not given: the spec's
    with pytest.raises(ValueError, match="ranges are lr, reg, dropout, input_noise"):
        sweep.random_search(2, momentum=(0.5, 0.9))


def test_evaluate_all_charges_each_configuration_its_own_penalty():
    """Each row's loss is that configuration's data loss plus *its* reg * sum W^2 (numpy),
    not the spec's reg (main reported every row with the spec's)."""
    ds = data.spiral()
    spec = mj.MLPSpec((2, 16, 3), reg=1e-3)
    configs = sweep.grid(seeds=(0,), lrs=(0.1,), regs=(0.0, 0.5, None))
    result = sweep.sweep(spec, ds, lambda lr: optim.sgd(lr), configs, epochs=2,
                         batch_size=100)
    rows = sweep.evaluate_all(result, ds.X_train, ds.y_train, spec)
    for i, reg in enumerate((0.0, 0.5, 1e-3)):  # None: the spec's
        params = result.params_of(i)
        data_loss, acc = train.evaluate(params, ds.X_train, ds.y_train, spec,
                                        spec.hyper()._replace(reg=0.0))
        penalty = reg * sum(float(np.sum(np.asarray(layer["W"], np.float64) ** 2))
                            for layer in params)
        np.testing.assert_allclose(rows[i], [data_loss + penalty, acc], rtol=1e-5)
    assert rows[1, 0] > rows[0, 0] + 0.1  # the penalty is there, and is large
