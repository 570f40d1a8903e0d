"""Training: determinism, gradient sources, epochs, divergence, best-on-validation."""


import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tree_equal

import mlp_jax as mj
from mlp_jax import batches, checkpoint, data, optim, sweep, train


def test_same_seed_bitwise_identical_twice():
    ds = data.spiral()
    spec = mj.MLPSpec((2, 50, 3), reg=1e-3, dropout=0.1)
    runs = [train.fit(spec, ds, optim.momentum(0.1), epochs=6, batch_size=32,
                      key=jax.random.key(7), eval_every=3, progress=False) for _ in range(2)]
    assert tree_equal(runs[0].state.params, runs[1].state.params)
    other = train.fit(spec, ds, optim.momentum(0.1), epochs=6, batch_size=32,
                      key=jax.random.key(8), eval_every=3, progress=False)
    assert not tree_equal(runs[0].state.params, other.state.params)


def test_backprop_and_autodiff_same_trajectory():
    """1000 float32 steps of shuffled minibatch SGD (batch 100, lr 0.1).

    The two gradients agree to float32 rounding (~1e-7 relative) at every step; how much
    the dynamics then amplify that depends on the run. Measured max |param difference|
    after 1000 steps: this setting 7.7e-7; He init 5.7e-7; full batch lr 0.05 1.8e-6;
    full batch lr 0.1 1.6e-5; full batch lr 1.0 1.9e-3 (a ReLU activation pattern flips
    around step 150 and the gap jumps from 6.5e-7 to 2.7e-4). With jax 0.10.2 (XLA's
    fusions round differently) this setting measured 4.5e-5, hence the bound 1e-4: a wrong
    gradient moves the params by orders of magnitude more."""
    ds = data.spiral()
    spec = mj.MLPSpec((2, 100, 3), reg=1e-3, init="normal", weight_scale=0.01)
    opt = optim.sgd(0.1)
    state = train.init_state(jax.random.key(0), spec, opt)
    X, Y = jnp.asarray(ds.X_train), jnp.asarray(ds.y_train)
    out = {g: train.make_epochs(spec, opt, 100, 334, g)(state, X, Y)[0].params  # 1002 steps
           for g in ("backprop", "autodiff")}
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
               zip(jax.tree.leaves(out["backprop"]), jax.tree.leaves(out["autodiff"])))
    assert diff <= 1e-4, diff


def test_epoch_uses_every_example_once_including_partial_batch():
    """N=10, batch 4: two full batches and one of 2. SGD with lr 0 on the squared loss with
    W = 0, so nothing moves and each batch's loss is the mean of y^2 over the rows it took;
    weighted by the batch sizes they sum to sum(y^2) when every row is used once."""
    spec = mj.MLPSpec((1, 1), loss="squared", bias=False)
    X = jnp.ones((10, 1))
    Y = jnp.arange(10.0)[:, None]
    opt = optim.sgd(0.0)  # no movement: the losses reveal which rows each batch took
    state = train.init_state(jax.random.key(0), spec, opt)
    state = state._replace(params=({"W": jnp.zeros((1, 1))},))
    _, losses = train.make_epochs(spec, opt, 4, 1)(state, X, Y)
    assert losses.shape == (1, 3)
    sizes = np.array([4, 4, 2])
    # each loss is the mean of y^2 over its batch; weighted back to sums they cover all rows
    np.testing.assert_allclose((np.asarray(losses[0]) * sizes).sum(), (np.arange(10) ** 2).sum(),
                               rtol=1e-6)


def test_divergence_stops_with_epoch_and_step(tmp_path):
    ds = data.spiral()
    spec = mj.MLPSpec((2, 100, 3), activation="identity")
    path = str(tmp_path / "c.npz")
    explode = optim.sgd(lambda step: jnp.where(step < 30, 0.01, 1e6))  # sane for 3 epochs
    with pytest.raises(train.TrainingDiverged, match=r"at epoch 4, step \d+ of 10") as e:
        train.fit(spec, ds, explode, epochs=50, batch_size=30, key=jax.random.key(0),
                  eval_every=1, checkpoint_path=path, progress=False)
    assert "holds epoch 3" in str(e.value)
    ck = checkpoint.load_params(path, which="final")
    assert ck.history[-1]["epoch"] == 3
    assert all(np.isfinite(a).all() for a in jax.tree.leaves(ck.params))


def test_evaluation_in_chunks_is_the_whole_splits_loss_and_accuracy(monkeypatch, x64):
    """A split larger than EVAL_CHUNK is evaluated a chunk at a time; the result is the
    whole split's mean loss (plus the penalty once) and accuracy, from numpy."""
    spec = mj.MLPSpec((3, 5, 4), reg=0.1, dtype="float64")
    params = mj.init_params(jax.random.key(0), spec)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(23, 3)), rng.integers(0, 4, 23)
    h = np.maximum(X @ np.asarray(params[0]["W"]).T + np.asarray(params[0]["b"]), 0)
    s = h @ np.asarray(params[1]["W"]).T + np.asarray(params[1]["b"])
    data = np.mean(np.log(np.exp(s).sum(1)) - s[np.arange(23), y])
    penalty = 0.1 * sum(float((np.asarray(p["W"]) ** 2).sum()) for p in params)
    from mlp_jax import evaluation

    monkeypatch.setattr(evaluation, "EVAL_CHUNK", 5)  # 5 + 5 + 5 + 5 + 3
    chunks = []
    whole = evaluation._evaluate
    monkeypatch.setattr(evaluation, "_evaluate", lambda *a: chunks.append(1) or whole(*a))
    value, acc = train.evaluate(params, X, y, spec)
    assert len(chunks) == 5  # it did go a chunk at a time
    assert value == pytest.approx(data + penalty, rel=1e-12)
    assert acc == pytest.approx(np.mean(s.argmax(1) == y), abs=1e-12)


def test_best_on_validation_is_kept():
    ds = data.digits()
    spec = mj.MLPSpec((64, 32, 10))
    r = train.fit(spec, ds, optim.adam(1e-3), epochs=8, batch_size=64, key=jax.random.key(0),
                  eval_every=2, progress=False)
    best_row = max(r.history, key=lambda row: row["val_acc"])
    assert r.best_val_acc == best_row["val_acc"]
    assert train.evaluate(r.best_params, ds.X_val, ds.y_val, spec)[1] == best_row["val_acc"]
    assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time"} <= \
        set(r.history[0])


def test_resume_true_starts_a_run_where_there_is_no_checkpoint_yet(tmp_path):
    """resume=True is safe on a first call (the README's Training block does it): with no
    checkpoint yet it is a fresh run; a second call continues it, to the params of one
    straight run."""
    ds, spec = data.spiral(), mj.MLPSpec((2, 16, 3))
    kw = dict(batch_size=100, key=jax.random.key(0), progress=False)
    saved = dict(checkpoint_path=str(tmp_path / "c.npz"), resume=True)
    first = train.fit(spec, ds, optim.sgd(0.1), epochs=2, **kw, **saved)
    assert [r["epoch"] for r in first.history] == [1, 2]
    second = train.fit(spec, ds, optim.sgd(0.1), epochs=4, **kw, **saved)
    straight = train.fit(spec, ds, optim.sgd(0.1), epochs=4, **kw)
    assert [r["epoch"] for r in second.history] == [1, 2, 3, 4]
    assert tree_equal(second.state.params, straight.state.params)


def test_float64_training_is_float64_throughout(x64):
    """A float64 net trained by fit (cosine-scheduled SGD, reg 1e-3, full batch) follows a
    float64 loop written here with jax.grad and math.cos to 1e-13, and its evaluation is
    the float64 loss to 1e-15: a float32 rate or reg anywhere is ~1e-8 off."""
    ds = data.spiral(points_per_class=20)
    spec = mj.MLPSpec((2, 16, 3), activation="tanh", reg=1e-3, dtype="float64")
    steps = 30
    r = train.fit(spec, ds, optim.sgd(optim.cosine(0.5, steps)), epochs=steps,
                  batch_size=10_000, key=jax.random.key(0), eval_every=steps, progress=False)
    X, Y = jnp.asarray(ds.X_train, jnp.float64), jnp.asarray(ds.y_train)
    params = mj.init_params(jax.random.split(jax.random.key(0))[0], spec)  # as init_state
    grad = jax.jit(jax.grad(lambda p: mj.loss(p, X, Y, spec)))
    for t in range(steps):
        lr = 0.5 * 0.5 * (1 + math.cos(math.pi * t / steps))
        params = jax.tree.map(lambda p, g, lr=lr: p - lr * g, params, grad(params))
    assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(r.state.params))
    for got, want in zip(jax.tree.leaves(r.state.params), jax.tree.leaves(params)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    value, _ = train.evaluate(r.state.params, X, Y, spec)
    assert value == pytest.approx(float(mj.loss(r.state.params, X, Y, spec)), rel=1e-15)


def test_full_batch_without_dropout_or_noise_draws_no_keys():
    """The lean step: when nothing is random (full batch, no dropout, no noise) the key is
    never split; with dropout, or with minibatches to shuffle, it is."""
    ds = data.spiral(points_per_class=20)
    X, Y = jnp.asarray(ds.X_train), jnp.asarray(ds.y_train)
    keys = {}
    for name, spec, bs in [("lean", mj.MLPSpec((2, 8, 3)), 60),
                           ("dropout", mj.MLPSpec((2, 8, 3), dropout=0.1), 60),
                           ("minibatch", mj.MLPSpec((2, 8, 3)), 20)]:
        state = train.init_state(jax.random.key(0), spec, optim.sgd(0.1))
        after, _ = train.make_epochs(spec, optim.sgd(0.1), bs, 3)(state, X, Y)
        assert int(after.step) == 3 * (60 // bs)
        keys[name] = tree_equal(jax.random.key_data(state.key), jax.random.key_data(after.key))
    assert keys == {"lean": True, "dropout": False, "minibatch": False}


@pytest.mark.parametrize("case,match", [
    ("labels out of range", r"^train split: loss 'svm' with 3 classes needs labels in \[0, 2\]"),
    ("nan in x", r"^train split: x holds a non-finite value \(nan\) at index \(7, 0\)"),
    ("y shorter than x", r"^train split: loss 'softmax' needs labels of shape \(300,\)"),
    ("empty", r"^the training split is empty"),
    ("val labels", r"^val split: loss 'softmax' with 3 classes needs labels in \[0, 2\]"),
])
@pytest.mark.parametrize("runner", ["fit", "sweep"])
def test_fit_checks_its_data_before_training(case, match, runner):
    """Concrete data is checked once, up front: a bad label no longer trains silently (svm)
    or ends as 'loss became nan ... lower the learning rate' (softmax). A sweep runs the
    same guards (on main it trained on such data)."""
    ds = data.spiral()
    bad = {"labels out of range": dict(y_train=ds.y_train + 3),
           "nan in x": dict(X_train=np.where(np.arange(300)[:, None] == 7, np.nan,
                                              ds.X_train)),
           "y shorter than x": dict(y_train=ds.y_train[:-1]),
           "empty": dict(X_train=ds.X_train[:0], y_train=ds.y_train[:0]),
           "val labels": dict(X_val=ds.X_train[:5], y_val=np.full(5, 3))}[case]
    spec = mj.MLPSpec((2, 8, 3), loss="svm" if case == "labels out of range" else "softmax")
    steps = []
    with pytest.raises(ValueError, match=match):
        if runner == "fit":
            train.fit(spec, ds._replace(**bad), optim.sgd(0.1), epochs=1, batch_size=10,
                      key=jax.random.key(0), progress=False,
                      callbacks=[lambda state, row: steps.append(row)])
        else:
            sweep.sweep(spec, ds._replace(**bad), optim.sgd, sweep.grid(), epochs=1,
                        batch_size=10, mesh=None,
                        callback=lambda start, part: steps.append(start))
    assert steps == []


@pytest.mark.parametrize("n,batch_size", [(10, 3), (10, 5), (7, 100), (1, 1), (1000, 64)])
def test_minibatches_cover_an_epoch_once(n, batch_size):
    """The arithmetic against the examples themselves: cutting a permutation of n into
    pieces of batch_size (the last one shorter) gives the sizes batches.minibatches says."""
    pieces = [len(p) for p in np.split(np.arange(n), range(batch_size, n, batch_size))]
    mb = batches.minibatches(n, batch_size)
    assert [mb.size] * mb.full + ([mb.rest] if mb.rest else []) == pieces
    assert mb.per_epoch == len(pieces) == train.steps_per_epoch(n, batch_size)


@pytest.mark.parametrize("n,batch_size,kw,match", [
    (100, 30, dict(devices=4), r"global batch of 30 examples does not split evenly over 4"),
    (100, 32, dict(devices=8), r"\(100 % 32 = 4 examples\) does not split evenly over 8"),
    (100, 33, dict(batchnorm=True), r"\(100 % 33 = 1 examples\) is a batch of 1"),
    (100, 96, dict(devices=4, batchnorm=True), r"\(100 % 96 = 4 examples, 1 per device"),
    (100, 4, dict(devices=4, batchnorm=True), r"minibatch of 4 examples \(1 per device"),
])
def test_batch_rules(n, batch_size, kw, match):
    with pytest.raises(batches.BatchSizeError, match=match):
        batches.check(n, batch_size, **kw)
    if kw.get("batchnorm") and kw.get("devices"):  # normalized over the whole minibatch
        batches.check(n, batch_size, **kw, normalized_per_device=False)


def test_fit_refuses_an_unsavable_spec_before_training(tmp_path):
    from mlp_jax.checkpoint import CheckpointError

    softplus = mj.Activation("softplus", jax.nn.softplus, lambda z, a: jax.nn.sigmoid(z))
    spec = mj.MLPSpec((2, 8, 3), activation=softplus)
    with pytest.raises(CheckpointError):
        train.fit(spec, data.spiral(), optim.sgd(0.1), epochs=1, batch_size=10,
                  key=jax.random.key(0), progress=False,
                  checkpoint_path=str(tmp_path / "c.npz"))
    assert not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_half_precision_trains_and_its_checkpoints_load_back(dtype, name, tmp_path):
    """float16 Adam gave NaN at update 2 (eps = 1e-8 and small squared gradients underflow):
    the squared-gradient averages are now float32, the params stay half precision, and the
    loss falls; a bfloat16 checkpoint (stored by numpy as raw 2-byte records) loads back
    bitwise into the same dtype."""
    spec = mj.MLPSpec((64, 32, 10), dtype=dtype)
    opt = getattr(optim, name)(1e-3)
    path = str(tmp_path / "c.npz")
    r = train.fit(spec, data.digits(), opt, epochs=3, batch_size=64, key=jax.random.key(0),
                  progress=False, checkpoint_path=path)
    losses = [row["train_loss"] for row in r.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    assert {a.dtype for a in jax.tree.leaves(r.state.params)} == {jnp.dtype(dtype)}
    moments = r.state.opt_state.nu if name == "adam" else r.state.opt_state.cache
    assert {a.dtype for a in jax.tree.leaves(moments)} == {jnp.dtype("float32")}
    back = checkpoint.load(path, spec=spec, template=train.init_state(jax.random.key(1), spec,
                                                                       opt))
    assert tree_equal(back.state.params, r.state.params)
    assert {a.dtype for a in jax.tree.leaves(back.state.params)} == {jnp.dtype(dtype)}
    assert tree_equal(checkpoint.load_params(path, which="final").params, r.state.params)


def test_diverged_sees_a_finite_explosion_and_nothing_else():
    """The rule against hand-made loss curves: non-finite anywhere, or an epoch's mean
    above 1000 x max(1, the first loss); a noisy but sane curve, or a rise under the
    limit, is not divergence."""
    sane = np.array([[2.3, 2.0, 1.9], [1.5, 3.0, 1.2], [0.9, 0.8, 0.7]])
    assert train.diverged(sane) is None
    assert train.diverged(sane * 900) is None  # first 2070, limit 2.07e6: not reached
    small = np.array([[1e-3, 1e-3], [999.0, 999.0]])  # limit 1000 x max(1, 1e-3) = 1000
    assert train.diverged(small) is None
    assert "rose to 1e+03 in epoch 2" in train.diverged(small + [[0, 0], [2.0, 2.0]])
    adam_1e9 = np.array([[2.3, 4e7], [1.7e18, 1.7e18]])  # main's `--lr 1e9`: finite
    assert "in epoch 1, over 1000 x max(1, its first value 2.3)" in train.diverged(adam_1e9)
    assert "loss became nan at epoch 7, step 2 of 3" in train.diverged(
        np.array([[1.0, np.nan, 1.0]]), epoch0=6)
    assert "became inf" in train.diverged(np.array([[1.0, 1.0], [np.inf, 1.0]]))
    assert train.diverged(np.array([[5.0, 4.0]]), first=1e-3) is None  # limit 1000 x 1
    assert train.diverged(np.array([[5e3, 4e3]]), first=1e-3) is not None


def test_fit_on_bare_arrays_says_what_it_wants():
    """fit((X, y), ...) was an AttributeError from deep inside; now a TypeError naming
    the fix, before anything runs."""
    spec = mj.MLPSpec((2, 8, 3))
    X, y = np.zeros((10, 2), np.float32), np.zeros(10, int)
    with pytest.raises(TypeError, match=r"got tuple: wrap arrays with mlp_jax.data.from_arrays"):
        train.fit(spec, (X, y), optim.sgd(0.1), epochs=1, batch_size=5, key=jax.random.key(0))
