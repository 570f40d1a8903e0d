"""Training: determinism, grad sources, resume after a real SIGKILL, checkpoints, data, CLI."""

import os
import pickle
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlp_jax as mj
from mlp_jax import checkpoint, cli, data, optim, train


def tree_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


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
    around step 150 and the gap jumps from 6.5e-7 to 2.7e-4)."""
    ds = data.spiral()
    spec = mj.MLPSpec((2, 100, 3), reg=1e-3, init="normal", weight_scale=0.01)
    opt = optim.sgd(0.1)
    state = train.init_state(jax.random.key(0), spec, opt)
    X, Y = jnp.asarray(ds.X_train), jnp.asarray(ds.y_train)
    out = {g: train.make_epochs(spec, opt, 100, 334, g)(state, X, Y)[0].params  # 1002 steps
           for g in ("backprop", "autodiff")}
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
               zip(jax.tree.leaves(out["backprop"]), jax.tree.leaves(out["autodiff"])))
    assert diff <= 1e-5, diff


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
    ck = checkpoint.load_params(path, best=False)
    assert ck.history[-1]["epoch"] == 3
    assert all(np.isfinite(a).all() for a in jax.tree.leaves(ck.state))


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


# --- checkpoints -----------------------------------------------------------------
def _saved(tmp_path, opt=None):
    spec = mj.MLPSpec((3, 4, 2))
    opt = opt or optim.adam(1e-3)
    state = train.init_state(jax.random.key(0), spec, opt)
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, state, spec=spec, history=[{"epoch": 1}])
    return spec, opt, state, path


def test_checkpoint_roundtrip_exact(tmp_path):
    spec, opt, state, path = _saved(tmp_path)
    ck = checkpoint.load(path, template=train.init_state(jax.random.key(5), spec, opt), spec=spec)
    assert tree_equal(ck.state.params, state.params) and tree_equal(ck.state.opt_state,
                                                                    state.opt_state)
    assert np.array_equal(jax.random.key_data(ck.state.key), jax.random.key_data(state.key))
    assert ck.history == [{"epoch": 1}] and ck.spec == spec
    chex.assert_trees_all_equal_shapes_and_dtypes(ck.state.params, state.params)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # no temp file left


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_checkpoint_clear_error(tmp_path, damage):
    spec, opt, state, path = _saved(tmp_path)
    raw = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write({"truncate": raw[: len(raw) // 2],
                 "flip": raw[:200] + bytes(b ^ 0xFF for b in raw[200:260]) + raw[260:],
                 "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated"):
        checkpoint.load(path, template=state, spec=spec)


def test_checkpoint_for_another_network(tmp_path):
    spec, opt, state, path = _saved(tmp_path)
    other = mj.MLPSpec((3, 5, 2))
    with pytest.raises(checkpoint.CheckpointError, match=r"sizes: checkpoint \(3, 4, 2\)"):
        checkpoint.load(path, template=train.init_state(jax.random.key(0), other, opt),
                        spec=other)
    with pytest.raises(checkpoint.CheckpointError, match="another optimizer"):
        checkpoint.load(path, template=train.init_state(jax.random.key(0), spec,
                                                        optim.momentum(0.1)))
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.load_params(str(tmp_path / "missing.npz"))


def _cli_train(out, *extra, quiet=True):
    cmd = [sys.executable, "-m", "mlp_jax.cli", "train", "--dataset", "spiral", "--hidden", "64",
           "--epochs", "200", "--batch-size", "16", "--eval-every", "1", "--dropout", "0.1",
           "--out", str(out), *(["--quiet"] if quiet else []), *extra]
    return cmd


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    """A real process, killed with SIGKILL twice mid-run, resumed each time."""
    ref = subprocess.run(_cli_train(tmp_path / "ref"), capture_output=True, text=True,
                         timeout=240)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    ckpt = out / "checkpoint.npz"
    rng = np.random.default_rng(0)
    for attempt in range(2):
        proc = subprocess.Popen(_cli_train(out, *(["--resume"] if attempt else [])),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        start_step = checkpoint.load_params(str(ckpt)).history[-1]["epoch"] if attempt else 0
        while time.time() < deadline and proc.poll() is None:  # wait for progress, then kill
            if ckpt.exists():
                try:
                    if checkpoint.load_params(str(ckpt)).history[-1]["epoch"] > start_step + 3:
                        break
                except checkpoint.CheckpointError:
                    pytest.fail("a reader saw a half-written checkpoint")
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0, 0.3)))  # anywhere in the next epoch or write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = subprocess.run(_cli_train(out, "--resume"), capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    a = checkpoint.load_params(str(tmp_path / "ref" / "checkpoint.npz"), best=False)
    b = checkpoint.load_params(str(ckpt), best=False)
    assert tree_equal(a.state, b.state)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 200  # nothing lost, nothing doubled


# --- data --------------------------------------------------------------------
def test_standardization_fitted_on_train_only():
    ds = data.digits()
    np.testing.assert_allclose(ds.X_train.mean(0), 0, atol=1e-5)
    assert np.abs(ds.X_test.mean(0)).max() > 1e-3  # test is transformed, not refitted
    again = data.digits()
    assert np.array_equal(ds.X_test, again.X_test) and np.array_equal(ds.y_val, again.y_val)
    assert len(ds.X_train) + len(ds.X_val) + len(ds.X_test) == 1797


def test_mnist1d_is_generated_locally_and_leaves_numpy_global_state():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    ds = data.mnist1d()
    assert np.array_equal(np.random.get_state()[1], before)
    assert ds.X_train.shape == (4000, 40) and ds.X_test.shape == (1000, 40)


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'mlp_jax\[data\]'"):
        data.digits()


def _write_cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"testing batch 1 of 1",
             b"labels": [int(v) for v in rng.integers(0, 10, n)],
             b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return batch


def test_cifar10_loader_on_official_format(tmp_path):
    batches = [_write_cifar_batch(tmp_path / f"data_batch_{i}", 6, i) for i in range(1, 6)]
    test = _write_cifar_batch(tmp_path / "test_batch", 4, 9)
    ds = data.cifar10(str(tmp_path), num_val=5)
    X = np.concatenate([b[b"data"] for b in batches]).astype(np.float32)
    mean = X[:-5].mean(0)
    np.testing.assert_allclose(ds.X_train, X[:-5] - mean, atol=1e-4)
    np.testing.assert_allclose(ds.X_test, test[b"data"].astype(np.float32) - mean, atol=1e-4)
    assert list(ds.y_val) == [v for b in batches for v in b[b"labels"]][-5:]


def test_cifar_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="refusing to load"):
        data.load_cifar_batch(str(path))
    assert not (tmp_path / "owned").exists()
    with pytest.raises(FileNotFoundError, match="never downloads"):
        data.cifar10(str(tmp_path / "nowhere"))


# --- CLI -----------------------------------------------------------------------
@pytest.mark.parametrize("argv,match", [
    (["train", "--lr", "-1"], "must be > 0"),
    (["train", "--hidden", "abc"], "comma-separated widths"),
    (["train", "--activation", "relux"], "invalid choice"),
    (["train", "--dataset", "cifar10"], "needs --data-dir"),
    (["train", "--loss", "logistic"], "binary but digits has 10 classes"),
    (["train", "--dropout", "1.5"], r"drop probability in \[0, 1\)"),
    (["eval", "--checkpoint", "/nonexistent"], "no checkpoint"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_bad_arguments_one_line_exit_2(argv, match, capsys, tmp_path):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "o")]
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert __import__("re").search(match, err), err


def test_cli_train_then_eval(tmp_path):
    out = tmp_path / "run"
    code = cli.main(["train", "--dataset", "spiral", "--epochs", "20", "--batch-size", "300",
                     "--optimizer", "sgd", "--lr", "1.0", "--out", str(out), "--quiet",
                     "--dropout", "0", "--input-noise", "0", "--hidden", "100"])
    assert code == 0
    assert {"checkpoint.npz", "metrics.jsonl", "curves.png", "summary.json"} <= \
        set(os.listdir(out))
    assert cli.main(["eval", "--checkpoint", str(out)]) == 0
    assert cli.main(["train", "--dataset", "spiral", "--out", str(out)]) == 2  # exists
