"""Processes end with whoever started them, and Ctrl-C at any moment once the command
line is running is one line, exit status 130, nothing left running.
The handler is installed before anything heavy is imported (the
tests wait for it by watching the process block SIGINT); it used to come after JAX's
import, and an interrupt during that import was swallowed ("Exception ignored in
_xla_gc_callback") while the run trained on to the end."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mlp_jax import checkpoint
from tests.procs import alive, blocks, children, wait_until
from tests.timeouts import guard

pytestmark = [pytest.mark.slow, pytest.mark.calibration,
              pytest.mark.skipif(sys.platform != "linux", reason="reads Linux's /proc")]


def _interrupted(out=None) -> set[str]:
    where = f"; what was saved in {out} stays, and --resume continues it"
    return {"mlp-jax: interrupted", "mlp-jax: interrupted" + where}


@pytest.mark.parametrize("command,after", [("train", 0.0), ("train", 0.3), ("train", 1.0),
                                           ("train", 3.0), ("sweep", 0.3), ("sweep", 3.0)])
def test_train_and_sweep_interrupted_at_any_moment_stop(tmp_path, command, after):
    """From the handler's first moment (Python still importing JAX) to mid-training."""
    out = tmp_path / "run"
    extra = ["--lr", "0.1,0.2"] if command == "sweep" else []
    proc = subprocess.Popen([sys.executable, "-m", "mlp_jax.cli", command, "--dataset",
                             "spiral", "--epochs", "200000", "--out", str(out), "--quiet",
                             *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: blocks(proc.pid), guard(30)), "no handler installed"
        time.sleep(after)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=guard(60))
    finally:
        proc.kill()
    assert proc.returncode == 130, (after, proc.returncode, err[-2000:])
    assert err.strip() in _interrupted(out), err[-2000:]
    for path in out.rglob("checkpoint.npz"):  # what was saved stays whole
        assert checkpoint.load_params(str(path)).history, path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained on a file, and a large file of features to predict."""
    where = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    np.savez(where / "d.npz", X=rng.normal(size=(200, 30)), y=rng.integers(0, 3, 200))
    np.savez(where / "new.npz", X=rng.normal(size=(300_000, 30)))
    assert subprocess.run([sys.executable, "-m", "mlp_jax.cli", "train", "--data",
                           str(where / "d.npz"), "--epochs", "1", "--quiet", "--out",
                           str(where / "run")], capture_output=True,
                          timeout=guard(120)).returncode == 0
    return where


@pytest.mark.parametrize("after", [0.0, 0.3, 0.8])
def test_predict_interrupted_stops_and_leaves_no_partial_file(trained, tmp_path, after):
    """``predict`` too: one line, exit 130, and its --out is absent or whole, never part
    of a file (it is written aside and renamed)."""
    out = tmp_path / "p.csv"
    proc = subprocess.Popen([sys.executable, "-m", "mlp_jax.cli", "predict", "--checkpoint",
                             str(trained / "run"), "--data", str(trained / "new.npz"),
                             "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: blocks(proc.pid), guard(30)), "no handler installed"
        time.sleep(after)
        assert proc.poll() is None, "predict ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=guard(60))
    finally:
        proc.kill()
    assert proc.returncode == 130, (after, proc.returncode, err[-2000:])
    assert err.strip() == "mlp-jax: interrupted", err[-2000:]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("p.csv")] in ([], ["p.csv"])
    if out.exists():
        assert len(out.read_text().splitlines()) == 300_001


def test_gradcheck_interrupted_leaves_no_worker_and_says_one_line():
    """Ctrl-C as a terminal sends it (to the whole process group) while two workers
    check: one line (no worker tracebacks, no leaked-semaphore warning), exit 130, and
    every process it started ends."""
    proc = subprocess.Popen([sys.executable, "-m", "mlp_jax.cli", "gradcheck", "--random",
                             "400", "--workers", "2", "--quiet"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_until(lambda: len(children(proc.pid)) >= 2, guard(60), 0.1)
        time.sleep(2)  # workers importing JAX, or checking
        started = children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=guard(60))
        assert proc.returncode == 130, (proc.returncode, err[-2000:])
        assert err.strip() == "mlp-jax: interrupted", err[-2000:]
        assert wait_until(lambda: not any(alive(p) for p in started), guard(5), 0.1)
    finally:
        proc.kill()


STARTER = """
import os, subprocess, sys, time
os.environ["MLP_JAX_PARENT"] = str(os.getpid())
child = subprocess.Popen([sys.executable, "-m", "mlp_jax.cli", "train", "--dataset", "spiral",
                          "--epochs", "200000", "--out", sys.argv[1], "--quiet"])
print(child.pid, flush=True)
time.sleep(600)
"""


def test_a_command_started_by_the_tests_or_an_experiment_ends_with_its_starter(tmp_path):
    """The starter (here a stand-in for a test process or an experiment, which set
    MLP_JAX_PARENT for their children) is SIGKILLed: the command it started ends too."""
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path / "run")],
                               stdout=subprocess.PIPE, text=True)
    try:
        child = int(starter.stdout.readline())
        assert wait_until(lambda: blocks(child), guard(30)), "the command never started"
        time.sleep(1)
        starter.kill()
        starter.wait(timeout=guard(10))
        assert wait_until(lambda: not alive(child), guard(5), 0.05), "the command outlived it"
    finally:
        starter.kill()


EXPERIMENT = """
import subprocess, time
from experiments.common import run_python
child = run_python(["-c", "import time; time.sleep(600)"], start=subprocess.Popen)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_an_experiments_bare_python_child_ends_with_it():
    """An experiment's ``python -c`` child (the benchmark's scikit-learn job and floor,
    whose code does not call end_with_starter itself) ends when the experiment is
    SIGKILLed."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    starter = subprocess.Popen([sys.executable, "-c", EXPERIMENT], cwd=root,
                               stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(starter.stdout.readline())
        time.sleep(0.5)
        assert alive(child), "the child ended by itself"
        starter.kill()
        starter.wait(timeout=guard(10))
        assert wait_until(lambda: not alive(child), guard(2), 0.05), "the child outlived it"
    finally:
        starter.kill()
        if child is not None and alive(child):
            os.kill(child, signal.SIGKILL)


def _train(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "mlp_jax.cli", "train", "--dataset",
                             "spiral", "--epochs", "200000", "--out", str(out), "--quiet",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_one_run_per_directory_and_no_stale_lock_after_a_crash(tmp_path):
    """A second run (train or sweep) on a directory in use: one line naming the holder's
    pid, exit 2, and the holder's files untouched (two runs on one --out used to delete
    each other's checkpoint and interleave metrics.jsonl). SIGKILL the holder: the kernel
    drops its lock, and --resume goes on at once."""
    out = tmp_path / "run"
    first = _train(out, "--eval-every", "1")
    try:
        assert wait_until(lambda: (out / "checkpoint.npz").exists(), guard(60), 0.05)
        for argv in (["train", "--dataset", "spiral", "--overwrite", "--seed", "1"],
                     ["sweep", "--dataset", "spiral", "--overwrite"]):
            second = subprocess.run([sys.executable, "-m", "mlp_jax.cli", *argv, "--out",
                                     str(out), "--quiet"], capture_output=True, text=True,
                                    timeout=guard(120))
            assert second.returncode == 2, second.stderr[-2000:]
            assert second.stderr.strip() == (
                f"mlp-jax: error: {out} is in use by another run (pid {first.pid}); wait "
                "for it, or choose another --out"), second.stderr
        assert first.poll() is None and (out / "checkpoint.npz").exists()
        first.kill()
        first.wait(timeout=guard(10))
        resumed = _train(out, "--resume")
        try:
            assert wait_until(lambda: resumed.poll() is not None or (
                (out / ".lock").read_text().strip() == str(resumed.pid)), guard(60), 0.05)
            assert resumed.poll() is None, resumed.communicate()[1][-2000:]
        finally:
            resumed.kill()
    finally:
        first.kill()


def test_an_interrupted_overwrite_leaves_no_mix_of_two_runs(tmp_path):
    """--overwrite removes the old run's files before it writes anything, so Ctrl-C
    before its first save leaves no old checkpoint for a later --resume to restore
    silently (main kept the old checkpoint, summary and plot beside an emptied
    metrics.jsonl); --resume where no run is says so (it silently started anew)."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "mlp_jax.cli", "train", "--dataset", "spiral",
                           "--epochs", "2", "--out", str(out), "--quiet"], capture_output=True,
                          text=True, timeout=guard(120))
    assert done.returncode == 0 and (out / "checkpoint.npz").exists(), done.stderr[-2000:]
    again = _train(out, "--overwrite", "--eval-every", "100000")  # no save for a long while
    try:
        assert wait_until(lambda: (out / ".lock").read_text().strip() == str(again.pid)
                          and not (out / "checkpoint.npz").exists(), guard(60), 0.02)
        again.send_signal(signal.SIGINT)
        again.communicate(timeout=guard(60))
    finally:
        again.kill()
    assert again.returncode == 130
    assert not [n for n in ("checkpoint.npz", "summary.json", "curves.png") if (out / n).exists()]
    resume = subprocess.run([sys.executable, "-m", "mlp_jax.cli", "train", "--dataset",
                             "spiral", "--epochs", "2", "--out", str(out), "--quiet",
                             "--resume"], capture_output=True, text=True, timeout=guard(120))
    assert resume.returncode == 2 and resume.stderr.strip() == (
        f"mlp-jax: error: --resume: {out} holds no run to continue (no checkpoint.npz); drop "
        "--resume to start one"), resume.stderr
