"""Checkpoints: exact round trips, clear errors on damage, and resume after a real SIGKILL."""

import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest
from conftest import tree_equal

import mlp_jax as mj
from mlp_jax import checkpoint, optim, train
from tests.timeouts import guard


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



def test_a_save_removes_what_a_killed_save_left(tmp_path):
    """A save killed mid-write leaves its temporary file; the next save of the same
    checkpoint removes it, and nothing of another file's."""
    (tmp_path / ".c.npz-dead1234.tmp").write_bytes(b"half")
    (tmp_path / ".other.npz-x.tmp").write_bytes(b"not ours")
    _saved(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [".other.npz-x.tmp", "c.npz"]

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


EPOCHS = 400  # long enough that a kill lands mid-run however fast the machine trains


def _cli_train(out, *extra, quiet=True):
    cmd = [sys.executable, "-m", "mlp_jax.cli", "train", "--dataset", "spiral", "--hidden", "64",
           "--epochs", str(EPOCHS), "--batch-size", "16", "--eval-every", "1", "--dropout", "0.1",
           "--out", str(out), *(["--quiet"] if quiet else []), *extra]
    return cmd


@pytest.mark.calibration
@pytest.mark.slow
def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    """A real process, killed with SIGKILL twice mid-run, resumed each time; with batch
    norm, so its running statistics (final and best) are in what must come back bitwise."""
    bn = ("--norm", "batchnorm")
    ref = subprocess.run(_cli_train(tmp_path / "ref", *bn), capture_output=True, text=True,
                         timeout=guard(240))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    ckpt = out / "checkpoint.npz"
    rng = np.random.default_rng(0)
    for attempt in range(2):
        proc = subprocess.Popen(_cli_train(out, *bn, *(["--resume"] if attempt else [])),
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
        proc.wait(timeout=guard(30))
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = subprocess.run(_cli_train(out, *bn, "--resume"), capture_output=True, text=True,
                          timeout=guard(240))
    assert done.returncode == 0, done.stderr
    for which in ("final", "best"):
        a = checkpoint.load_params(str(tmp_path / "ref" / "checkpoint.npz"), which=which)
        b = checkpoint.load_params(str(ckpt), which=which)
        assert tree_equal(a.params, b.params) and tree_equal(a.stats, b.stats)
        assert len(a.stats) == 1
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == EPOCHS  # nothing lost, nothing doubled


# --- data --------------------------------------------------------------------


def _with(info, **changes):
    """info with top-level or ``spec.``-prefixed fields changed (None: removed)."""
    for k, v in changes.items():
        where, key = (info["spec"], k[5:]) if k.startswith("spec_") else (info, k)
        if v is None:
            where.pop(key)
        else:
            where[key] = v
    return info


@pytest.mark.parametrize("edit,match", [
    (lambda info: _with(info, spec_frobnicate=1), "frobnicate"),
    (lambda info: _with(info, spec_sizes="abc"), "cannot read"),
    (lambda info: _with(info, spec_activation="nope"), "cannot read"),
    (lambda info: _with(info, history=None), "KeyError"),
    (lambda info: _with(info, meta=[1]), "meta a dict"),
    (lambda info: _with(info, key_impl="nope"), "key_impl"),
    (lambda info: [], "record of type list"),
])
def test_a_record_valid_json_but_wrong_is_a_checkpoint_error(tmp_path, edit, match):
    """A checkpoint whose JSON parses but is not what this library wrote: CheckpointError
    (one line in the CLI), never a ValueError/TypeError/AttributeError traceback."""
    import json

    spec, opt, state, path = _saved(tmp_path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    info = edit(json.loads(str(arrays["__info__"])))
    arrays["__info__"] = np.array(json.dumps(info))
    np.savez(path, **arrays)
    with pytest.raises(checkpoint.CheckpointError, match=match):
        checkpoint.load(path, template=train.init_state(jax.random.key(0), spec, opt))
    if match != "key_impl":  # load_params reads no key
        with pytest.raises(checkpoint.CheckpointError, match=match):
            checkpoint.load_params(path)


@pytest.mark.calibration
@pytest.mark.slow
def test_ctrl_c_anywhere_is_one_line_and_keeps_the_checkpoint(tmp_path):
    """SIGINT once the command is running (it has printed its first line: the first
    compilation follows), a little later, and mid-run: exit status 130, one line, no
    traceback (during the first compilation it used to segfault 4 times in 5), and a
    checkpoint that was written stays loadable. (Before that first line Python is still
    importing, and Ctrl-C there is Python's own KeyboardInterrupt.)"""
    for i, when in enumerate((0.0, 0.4, "mid-run")):
        out = tmp_path / f"r{i}"
        proc = subprocess.Popen(_cli_train(out, quiet=False), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().startswith("spiral")
        if when == "mid-run":
            metrics = out / "metrics.jsonl"
            deadline = time.time() + 60
            while time.time() < deadline and (not metrics.exists() or
                                              len(metrics.read_text().splitlines()) < 2):
                time.sleep(0.02)
        else:
            time.sleep(when)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=guard(60))
        err = err.strip()
        assert proc.returncode == 130, (when, proc.returncode, err[-2000:])
        assert err == f"mlp-jax: interrupted; what was saved in {out} stays, and --resume " \
                      "continues it", (when, err)
        if when == "mid-run":
            # metrics.jsonl is written before the checkpoint of the same epoch, so the
            # checkpoint holds at least the epoch before
            assert checkpoint.load_params(str(out / "checkpoint.npz")).history[-1]["epoch"] >= 1
