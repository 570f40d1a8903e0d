"""Data parallelism: 8 host devices in a subprocess, and 2 real processes on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mlp_jax import checkpoint
from tests.timeouts import guard

HERE = os.path.dirname(os.path.abspath(__file__))
F32 = 2e-6  # float32 rounding, accumulated over the steps compared

pytestmark = [pytest.mark.slow, pytest.mark.calibration]  # long: CI runs them


@pytest.fixture(scope="module")
def eight_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "parallel_child.py")], env=env,
                          capture_output=True, text=True, timeout=guard(300))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("form", ["shard_map", "gspmd"])
@pytest.mark.parametrize("grad", ["backprop", "autodiff"])
def test_both_forms_equal_single_device_over_100_steps(eight_devices, form, grad):
    """Either gradient source in either form (jax.grad in shard_map included: replicated
    params are cast to varying first, or its gradients would arrive summed, 8x)."""
    assert eight_devices["devices"] == 8
    assert eight_devices[f"{form}_{grad}"] <= F32, eight_devices
    assert eight_devices[f"{form}_{grad}_sharding"] in ("P()", "PartitionSpec()")  # replicated


def test_fit_over_the_mesh_with_dropout(eight_devices):
    """gspmd draws the single-device masks (same run to rounding); shard_map draws each
    shard's own, so its run differs (statistically the same, as the README says)."""
    assert eight_devices["fit_dropout_gspmd"] <= F32, eight_devices
    assert eight_devices["fit_dropout_shard_map"] > 1e-3, eight_devices


def test_batch_norm_statistics_global_under_gspmd_per_shard_under_shard_map(eight_devices):
    """20 steps over 8 devices: gspmd is the one-device run (global batch statistics),
    shard_map is a one-device reference that normalizes each eighth of the batch alone and
    averages gradients and updated running statistics; the two forms really differ."""
    assert eight_devices["bn_gspmd"] <= F32, eight_devices
    assert eight_devices["bn_shard_map"] <= F32, eight_devices
    assert eight_devices["bn_forms_differ"] > 1e-3, eight_devices
    assert "a minibatch of 8 examples (1 per device under shard_map) is a batch of 1" in \
        eight_devices["bn_per_device_error"]


def test_sweep_sharded_over_a_config_axis(eight_devices):
    """12 configs over 8 devices (padded to 16, padding dropped), each device mapping or
    vmapping its share == the whole sweep on one device."""
    assert eight_devices["sweep_map"] <= F32, eight_devices
    assert eight_devices["sweep_vmap"] <= F32, eight_devices
    assert eight_devices["sweep_shapes"] == [[12, 3, 3], [12, 16, 2]]


def test_uneven_batch_is_a_clear_error(eight_devices):
    assert "100 examples does not split evenly over 8 devices" in eight_devices["uneven_error"]
    assert "300 % 64 = 44 examples) does not split evenly" in eight_devices["uneven_last_error"]


def test_checkpoints_move_between_sharded_and_single(eight_devices):
    assert eight_devices["sharded_then_single"] <= F32
    assert eight_devices["single_then_sharded"] <= F32
    assert eight_devices["history_len"] == 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ARGS = ["--dataset", "spiral", "--hidden", "32", "--epochs", "60", "--batch-size", "60",
        "--optimizer", "sgd", "--lr", "0.1", "--dropout", "0", "--input-noise", "0", "--quiet"]


def cli(*args):
    return [sys.executable, "-m", "mlp_jax.cli", "train", *ARGS, *args]


def test_two_processes_match_one(tmp_path):
    """300 steps over 2 processes x 1 device on 127.0.0.1 == one process, to float32 rounding."""
    port = free_port()
    procs = [subprocess.Popen(cli("--out", str(tmp_path / f"p{i}"), "--num-processes", "2",
                                  "--process-id", str(i), "--coordinator", f"127.0.0.1:{port}",
                                  "--devices", "0", "--dist-timeout", "60"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    single = subprocess.run(cli("--out", str(tmp_path / "one")), capture_output=True, text=True,
                            timeout=guard(120))
    try:
        outs = [p.communicate(timeout=guard(180)) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert single.returncode == 0, single.stderr
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    a = checkpoint.load_params(str(tmp_path / "one" / "checkpoint.npz"), which="final")
    b = checkpoint.load_params(str(tmp_path / "p0" / "checkpoint.npz"), which="final")
    assert a.history[-1]["step"] == b.history[-1]["step"] == 300
    diff = max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)))
    assert diff <= F32, diff
    assert not (tmp_path / "p1").exists()  # only process 0 writes files, or makes --out


def test_peer_that_never_starts_is_a_clear_error_within_the_timeout(tmp_path):
    t = time.time()
    proc = subprocess.run(cli("--out", str(tmp_path / "p0"), "--num-processes", "2",
                              "--process-id", "0", "--coordinator", f"127.0.0.1:{free_port()}",
                              "--devices", "0", "--dist-timeout", "5"),
                          capture_output=True, text=True, timeout=guard(120))
    assert proc.returncode == 1
    assert time.time() - t < 60
    err = proc.stderr.strip()
    assert "process 0 of 2" in err and "never joined" in err, err
    assert "@ 0x" not in err and "Traceback" not in err


def test_two_devices_take_grad_and_eval_every(tmp_path):
    """`train --devices 2 --grad autodiff --eval-every 5`: one history row per 5 epochs, and
    the hand backprop is never called (it is replaced by one that fails)."""
    child = ("import sys, mlp_jax.epochs as t\n"
             "def boom(*a, **k):\n"
             "    raise AssertionError('backprop called')\n"
             "t.backprop_and_stats = boom\n"
             "from mlp_jax.cli import main\n"
             "sys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    args = list(ARGS)
    args[args.index("--epochs") + 1] = "20"
    proc = subprocess.run([sys.executable, "-c", child, "train", *args, "--devices", "2",
                           "--grad", "autodiff", "--eval-every", "5", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=guard(300))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [5, 10, 15, 20]
    assert all("lr" in r and "train_acc" in r for r in rows)  # the one-device row
    # and with the hand backprop, the same child fails: the replacement is really used
    proc = subprocess.run([sys.executable, "-c", child, "train", *args, "--devices", "2",
                           "--eval-every", "5", "--out", str(tmp_path / "b")],
                          env=env, capture_output=True, text=True, timeout=guard(300))
    assert proc.returncode != 0 and "backprop called" in proc.stderr


def _running(marker: str) -> bool:
    """Whether a process whose command line holds ``marker`` is alive (Linux /proc)."""
    for _ in range(50):
        alive = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    alive |= marker.encode() in f.read()
            except OSError:
                continue
        if not alive:
            return False
        time.sleep(0.1)
    return True


def test_peer_that_dies_mid_run_ends_the_other_with_one_line(tmp_path):
    """Two processes training; process 1 is killed (SIGKILL) once process 0 has written its
    first epochs. Process 0 ends with exit status 1 and one line naming what happened, in
    well under a minute, its last checkpoint intact. (Killing only the supervisor used to
    leave its worker training on, and process 0 with it.)"""
    port = free_port()
    args = list(ARGS)
    args[args.index("--epochs") + 1] = "100000"  # runs until the peer dies
    procs = [subprocess.Popen([sys.executable, "-m", "mlp_jax.cli", "train", *args, "--out",
                               str(tmp_path / f"p{i}"), "--num-processes", "2", "--process-id",
                               str(i), "--coordinator", f"127.0.0.1:{port}", "--devices", "0",
                               "--dist-timeout", "10", "--eval-every", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    metrics = tmp_path / "p0" / "metrics.jsonl"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and (not metrics.exists() or
                                          len(metrics.read_text().splitlines()) < 3):
            time.sleep(0.1)
        assert metrics.exists(), "process 0 never trained"
        procs[1].kill()
        t = time.time()
        _, err = procs[0].communicate(timeout=guard(90))
        waited = time.time() - t
    finally:
        for p in procs:
            p.kill()
    err = err.strip()
    assert procs[0].returncode == 1, err[-2000:]
    assert waited < 60, waited
    # killing process 1's supervisor (what Popen started) ended its worker too: no orphan
    assert not _running(str(tmp_path / "p1")), "process 1's worker outlived its supervisor"
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "@ 0x" not in err, err
    assert "process 0 of 2" in err and ("died" in err or "unreachable" in err), err
    ck = checkpoint.load_params(str(tmp_path / "p0" / "checkpoint.npz"), which="final")
    assert ck.history[-1]["epoch"] >= 3
