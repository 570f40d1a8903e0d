"""Benchmark: mlp_jax against numpy, PyTorch (if installed), a Python loop of jitted steps,
sequential fits, and the GEMM roofline, all measured in this one run.

    python -m experiments.benchmark            # full (2.5-6 minutes on 2 cores)
    python -m experiments.benchmark --quick    # seconds: a smoke run with small sizes

Prints each measurement and its ratio to mlp_jax; writes experiments/results/benchmark.json.
Absolute times are context; the ratios are the result.
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp_jax as mj  # noqa: E402
from experiments.common import quick_mode, rss_peak, run_python, write_json  # noqa: E402
from experiments.performance import GOALS  # noqa: E402
from mlp_jax import data, optim, parallel, sweep, train  # noqa: E402
from mlp_jax.spec import NORMS  # noqa: E402

# One host device per core, so the sweep can shard configurations over the cores (before
# JAX's first operation). The single-device measurements run on device 0.
parallel.use_every_core()

QUICK = quick_mode()
REPEATS = 5 if QUICK else 30  # timed repetitions (after warm-up); we report the median
GEMM_N = 512 if QUICK else 2048  # the roofline's square float32 matmul
BATCH, D, H, C = 256, 3072, 100, 10  # the CIFAR-shaped step
SPIRAL_STEPS = 200 if QUICK else 10_000
SWEEP_STEPS = 100 if QUICK else 2_000  # per configuration, 64 configurations (16 quick)
MEMORY_N = 2_000 if QUICK else 50_000  # CIFAR-sized training set for the memory check
LR, REG = 1e-3, 1e-3


def median_time(fn, repeats=REPEATS, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def block(tree):
    return jax.block_until_ready(tree)


# --- Memory: peak RSS of training epochs, in a child process ----------------------
def memory_child(n):
    base = rss_peak()  # after importing jax
    # Build the dataset on the device chunk by chunk into one donated buffer, so it
    # exists exactly once (a numpy copy plus a device copy would double it).
    put = jax.jit(lambda buf, chunk, i: jax.lax.dynamic_update_slice(buf, chunk, (i, 0)),
                  donate_argnums=0)
    X = jnp.zeros((n, D), jnp.float32)
    for i in range(0, n, 5000):
        rows = min(5000, n - i)
        chunk = jax.random.normal(jax.random.key(i), (rows, D), jnp.float32)
        X = put(X, chunk, i)
    Y = jax.random.randint(jax.random.key(1), (n,), 0, C)
    block(X)
    after_data = rss_peak()
    mspec = mj.MLPSpec((D, H, C), reg=REG)
    mopt = optim.sgd(LR)
    epochs = train.make_epochs(mspec, mopt, BATCH, 1)
    state = train.init_state(jax.random.key(0), mspec, mopt)
    for _ in range(2):
        state, losses = epochs(state, X, Y)
        block(losses)
    return {"dataset_bytes": n * D * 4, "baseline_bytes": base,
            "peak_after_data_bytes": after_data, "peak_bytes": rss_peak()}


if "--memory-child" in sys.argv:
    print(json.dumps(memory_child(int(sys.argv[sys.argv.index("--memory-child") + 1]))))
    sys.exit(0)
results = {"device": str(jax.devices()[0]), "platform": platform.platform(),
           "versions": {"jax": jax.__version__, "numpy": np.__version__,
                        "python": platform.python_version()}, "quick": QUICK}
try:
    import torch
    results["versions"]["torch"] = torch.__version__
    torch.set_num_threads(os.cpu_count())
except ImportError:
    torch = None
print(f"device {results['device']}; versions {results['versions']}")

# --- CIFAR-shaped step, its peers and the rooflines, timed interleaved ------------
# This machine's speed drifts between minutes (the same 2048^3 GEMM has measured
# 157-298 GFLOP/s in different runs), so the peers are timed round-robin in short blocks
# and compared by their medians: drift then hits all of them alike. Each block first
# runs one untimed call: switching peers costs the next call cold caches (and PyTorch's
# OpenMP threads keep spinning on both cores for a while after their work).
def interleaved_medians(fns: dict, rounds: int, per_block: int = 5) -> dict:
    for fn in fns.values():  # warm-up (and compilation)
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()  # untimed: the hand-over from the previous peer
            for _ in range(per_block):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


fns = {}
a = jax.random.normal(jax.random.key(0), (GEMM_N, GEMM_N))
matmul = jax.jit(jnp.dot)
fns["gemm"] = lambda: block(matmul(a, a))

# FLOPs: forward 2N(DH + HC); backward dW2 2NHC, dH 2NHC, dW1 2NDH (no dx at the input).
step_flops = 2 * BATCH * (2 * D * H + 3 * H * C)
rng = np.random.default_rng(0)
Xb = rng.normal(size=(BATCH, D)).astype(np.float32)
yb = rng.integers(0, C, BATCH)
spec = mj.MLPSpec((D, H, C), reg=REG)
opt = optim.sgd(LR)
temp_bytes = {}


def timed_step(spec, grad):
    """One compiled training step on the CIFAR-shaped batch, as a no-argument function
    (its state carried from call to call), and its XLA temporary bytes."""
    step = train.make_train_step(spec, opt, grad)
    state = train.init_state(jax.random.key(0), spec, opt)
    x, y, hyper = jnp.asarray(Xb), jnp.asarray(yb), spec.hyper(jnp.float32)
    box = [state]

    def run_step():
        box[0], loss = step(box[0], x, y, hyper)
        block(loss)

    mem = step.lower(state, x, y, hyper).compile().memory_analysis()
    return run_step, getattr(mem, "temp_size_in_bytes", None)


for grad in ("backprop", "autodiff"):
    fns[grad], temp_bytes[grad] = timed_step(spec, grad)
# The same step with a norm between the hidden affine map and the ReLU (hand backprop):
# batch norm (batch statistics, running averages updated) and layer norm.
for norm in NORMS:
    fns[norm], temp_bytes[norm] = timed_step(mj.MLPSpec((D, H, C), reg=REG, norm=norm),
                                             "backprop")


def numpy_two_layer_step(X, y, p, reg, lr):
    """CS231n's two-layer ReLU net with softmax + L2, one SGD step, in numpy; updates
    ``p = [W1 (D, H), b1, W2 (H, C), b2]`` in place and returns the loss."""
    W1, b1, W2, b2 = p
    n = len(X)
    hidden = np.maximum(0, X @ W1 + b1)  # (N, H)
    scores = hidden @ W2 + b2  # (N, C)
    scores = scores - scores.max(1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(1, keepdims=True)
    loss = -np.log(probs[np.arange(n), y]).mean() + reg * ((W1 * W1).sum() + (W2 * W2).sum())
    dscores = probs
    dscores[np.arange(n), y] -= 1
    dscores /= n
    dW2 = hidden.T @ dscores + 2 * reg * W2
    db2 = dscores.sum(0)
    dhidden = dscores @ W2.T
    dhidden[hidden <= 0] = 0
    dW1 = X.T @ dhidden + 2 * reg * W1
    db1 = dhidden.sum(0)
    for param, grad in zip(p, (dW1, db1, dW2, db2)):
        param -= lr * grad
    return loss


np_params = [(np.sqrt(2 / D) * rng.normal(size=(D, H))).astype(np.float32),
             np.zeros(H, np.float32),
             (np.sqrt(2 / H) * rng.normal(size=(H, C))).astype(np.float32),
             np.zeros(C, np.float32)]
fns["numpy"] = lambda: numpy_two_layer_step(Xb, yb, np_params, REG, LR)
if torch is not None:
    model = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Linear(H, C))
    topt = torch.optim.SGD(model.parameters(), lr=LR)
    tx, ty = torch.from_numpy(Xb), torch.from_numpy(yb)

    def torch_step():
        topt.zero_grad(set_to_none=True)
        out = model(tx)
        loss = torch.nn.functional.cross_entropy(out, ty) + REG * (
            model[0].weight.square().sum() + model[2].weight.square().sum())
        loss.backward()
        topt.step()

    fns["torch_eager"] = torch_step

# The step's two big products alone (forward x W1^T, backward dW1 = dH^T x), in the step's
# layout, at their own (skinny, 100-wide) shapes: what this CPU allows for them. Each
# iteration depends on the last, so XLA cannot hoist the products out of the loop.
xw = jnp.asarray(Xb)
w1 = jnp.asarray(np_params[0].T.copy())  # (H, D): mlp_jax's (out, in)
dh = jnp.asarray(rng.normal(size=(BATCH, H)).astype(np.float32))
reps = 10


@jax.jit
def two_products(x, w, d):
    def body(i, c):
        z = (x + c) @ w.T  # (N, H)
        dw = d.T @ (x + c)  # (H, D)
        return c + (z[0, 0] + dw[0, 0]) * 1e-12
    return jax.lax.fori_loop(0, reps, body, jnp.float32(0))


fns["product_shapes"] = lambda: block(two_products(xw, w1, dh))
med = interleaved_medians(fns, rounds=REPEATS)
gemm_flops = 2 * GEMM_N**3 / med["gemm"]
results["gemm_gflops"] = gemm_flops / 1e9
print(f"\nGEMM {GEMM_N}^3 float32: {gemm_flops / 1e9:.0f} GFLOP/s (the roofline)")
step_res = {name: {"ms": med[name] * 1e3} for name in ("backprop", "autodiff", *NORMS,
                                                        "numpy", "torch_eager") if name in med}
for grad in ("backprop", "autodiff"):
    step_res[grad].update(gflops=step_flops / med[grad] / 1e9, temp_bytes=temp_bytes[grad])
for norm in NORMS:
    step_res[norm]["temp_bytes"] = temp_bytes[norm]
roof_ms = step_flops / gemm_flops * 1e3
step_res["roofline"] = {"ms": roof_ms}
shape_ms = med["product_shapes"] / reps * 1e3
step_res["product_shapes"] = {"ms": shape_ms}
results["cifar_step"] = step_res
base = step_res["backprop"]["ms"]
print(f"\nCIFAR-shaped step (3072-100-10 ReLU, softmax + L2, batch 256, SGD): "
      f"{step_flops / 1e6:.0f} MFLOP")
for name, r in step_res.items():
    extra = f", {r['gflops']:.0f} GFLOP/s" if "gflops" in r else ""
    mem = f", XLA temp {r['temp_bytes'] / 1e6:.2f} MB" if r.get("temp_bytes") else ""
    print(f"  {name:<12} {r['ms']:8.3f} ms  (x{r['ms'] / base:5.2f} of mlp_jax backprop)"
          f"{extra}{mem}")
print(f"  mlp_jax backprop at {roof_ms / base:.0%} of the GEMM roofline, "
      f"{shape_ms / base:.0%} of its two big products' own speed (product_shapes); "
      f"backprop/autodiff time {base / step_res['autodiff']['ms']:.2f}")
print(f"  a step with a norm / the plain step (goal <= {GOALS['norm_vs_plain'].target}): "
      + ", ".join(f"{norm} {step_res[norm]['ms'] / base:.2f}" for norm in NORMS))

# --- Spiral: 10 000 full-batch steps ----------------------------------------------
ds = data.spiral()
sspec = mj.MLPSpec((2, 100, 3), reg=5e-4, init="normal", weight_scale=0.01)
sopt = optim.sgd(1.0)
X, Y = jnp.asarray(ds.X_train), jnp.asarray(ds.y_train)
state0 = train.init_state(jax.random.key(0), sspec, sopt)
fused = train.make_epochs(sspec, sopt, 300, SPIRAL_STEPS)
t_fused = median_time(lambda: block(fused(state0, X, Y)), repeats=3, warmup=1)
one = train.make_train_step(sspec, sopt)


def python_loop():
    s = state0
    for _ in range(SPIRAL_STEPS):
        s, loss = one(s, X, Y)
    block(loss)


t_loop = median_time(python_loop, repeats=3, warmup=1)


def numpy_spiral():
    """The case study's training loop: numpy, full batch, the same step as above."""
    r = np.random.default_rng(0)
    p = [0.01 * r.normal(size=(2, 100)), np.zeros(100), 0.01 * r.normal(size=(100, 3)),
         np.zeros(3)]
    X64 = ds.X_train.astype(np.float64)
    for _ in range(SPIRAL_STEPS):
        numpy_two_layer_step(X64, ds.y_train, p, 5e-4, 1.0)


t_np = median_time(numpy_spiral, repeats=1 if not QUICK else 3, warmup=0)
results["spiral"] = {"steps": SPIRAL_STEPS, "fused_s": t_fused, "python_loop_s": t_loop,
                     "numpy_s": t_np}
print(f"\nSpiral, {SPIRAL_STEPS} full-batch steps: fused {t_fused:.3f} s; Python loop of jitted "
      f"steps {t_loop:.3f} s (x{t_loop / t_fused:.1f}); numpy {t_np:.3f} s "
      f"(x{t_np / t_fused:.1f})")

# --- Sweep: 64 spiral trainings ---------------------------------------------------
# Against the same compiled single-configuration program called once per configuration;
# within a device the configurations are batched (vmap) or run one after another
# (lax.map), on one device or sharded over a "config" axis of every local device.
configs = sweep.grid(seeds=range(2 if QUICK else 4), lrs=(1.0, 0.5, 0.2, 0.1),
                     regs=(1e-4, 1e-2) if QUICK else (1e-4, 5e-4, 1e-3, 1e-2))
keys = jnp.stack([jax.random.key(c["seed"]) for c in configs])
lrs = jnp.asarray([c["lr"] for c in configs])
hypers = mj.Hyper(jnp.asarray([c["reg"] for c in configs]), *2 * [jnp.zeros(len(configs))])
single = sweep.make_sweep(sspec, lambda lr: optim.sgd(lr), epochs=SWEEP_STEPS, batch_size=300,
                          batching="vmap")


def sequential():
    for i in range(len(configs)):  # the same compiled program, one configuration at a time
        out = single(keys[i:i + 1], lrs[i:i + 1], jax.tree.map(lambda a, i=i: a[i:i + 1], hypers),
                     X, Y)
    block(out)


t_seq = median_time(sequential, repeats=1 if not QUICK else 2, warmup=1)
variants = {}
meshes = {"1 device": None}
if jax.local_device_count() > 1:
    meshes[f"{jax.local_device_count()} devices"] = sweep.config_mesh()
for where, mesh in meshes.items():
    for batching in ("vmap", "map"):
        run = sweep.make_sweep(sspec, lambda lr: optim.sgd(lr), epochs=SWEEP_STEPS,
                               batch_size=300, mesh=mesh, batching=batching)
        variants[f"{where}, {batching}"] = median_time(
            lambda run=run: block(run(keys, lrs, hypers, X, Y)), repeats=1 if QUICK else 3,
            warmup=1)
# sweep() through the API, twice, as a notebook cell run twice: the second call reuses
# the first's compiled program (mlp_jax.programs), against that program's time alone
spiral_ds = data.spiral()
api = []
for _ in range(2):
    t = time.perf_counter()
    sweep.sweep(sspec, spiral_ds, lambda lr: optim.sgd(lr), configs, epochs=SWEEP_STEPS,
                batch_size=300)
    api.append(time.perf_counter() - t)
default_variant = (f"{jax.local_device_count()} devices" if jax.local_device_count() > 1
                   else "1 device") + f", {sweep.BATCHING.get(jax.default_backend(), 'vmap')}"
results["sweep"] = {"configs": len(configs), "steps": SWEEP_STEPS, "sequential_s": t_seq,
                    "variants_s": variants, "backend": jax.default_backend(),
                    "default_batching": sweep.BATCHING.get(jax.default_backend(), "vmap"),
                    "api_first_s": api[0], "api_second_s": api[1],
                    "api_program": default_variant}
print(f"\nSweep of {len(configs)} spiral trainings x {SWEEP_STEPS} steps: {len(configs)} "
      f"sequential calls of the single-config program {t_seq:.2f} s; one program:")
for name, t in variants.items():
    print(f"  {name:16s} {t:6.2f} s  (x{t_seq / t:.2f} throughput)")
print(f"sweep() through the API: first call {api[0]:.2f} s, second {api[1]:.2f} s "
      f"(x{api[1] / variants[default_variant]:.2f} its compiled program's "
      f"{variants[default_variant]:.2f} s)")

# --- Time to result: the quick start's job against scikit-learn's ------------------
# As a user runs them, each in a fresh process (imports counted): `mlp-jax train` on
# digits with its defaults, cold (an empty compilation cache) and warm (the cache a
# previous run filled), against scikit-learn's MLPClassifier with one BLAS thread on the
# same training split and the same width, batch, lr and epochs. Interleaved; medians.
SKLEARN = """
import sys, time
t0 = time.perf_counter()
import numpy as np
from sklearn.neural_network import MLPClassifier
d = np.load(sys.argv[1])
clf = MLPClassifier(hidden_layer_sizes=(256,), batch_size=64, learning_rate_init=1e-3,
                    max_iter=int(sys.argv[2]), random_state=0)
clf.fit(d["X_train"], d["y_train"])
print((clf.predict(d["X_test"]) == d["y_test"]).mean(), time.perf_counter() - t0)
"""
# The floor under any `mlp-jax train`: a fresh Python that imports what every run needs
# before it computes anything (jax and its first op, matplotlib for curves.png). The
# time-to-result goals are stated against scikit-learn's job; this is the limit beneath.
FLOOR = """
import jax, jax.numpy as jnp
jnp.zeros(1).block_until_ready()
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot
"""
TTR_EPOCHS, TTR_ROUNDS = (5, 1) if QUICK else (100, 3)


def train_shown(args: list[str], env: dict) -> float:
    """Run ``mlp-jax train ARGS`` to its end; return when its result (the final params'
    accuracies) appeared on its stdout, in ``time.perf_counter`` seconds: a user reads
    it there while curves.png is still being drawn."""
    proc = run_python(["-m", "mlp_jax.cli", "train", *args], start=subprocess.Popen, env=env,
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    shown = None
    for line in proc.stdout:
        if shown is None and line.startswith("final params:"):
            shown = time.perf_counter()
    if proc.wait() or shown is None:
        raise RuntimeError(f"mlp-jax train {' '.join(args)} failed (exit {proc.returncode})")
    return shown


def time_to_result():
    import shutil
    import tempfile

    where = tempfile.mkdtemp()
    digits_ds = data.digits()
    np.savez(os.path.join(where, "digits.npz"), X_train=digits_ds.X_train,
             y_train=digits_ds.y_train, X_test=digits_ds.X_test, y_test=digits_ds.y_test)
    one_thread = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                      MKL_NUM_THREADS="1")
    runs = {"cold": [], "warm": [], "sklearn": [], "floor": [], "cold_shown": [],
            "warm_shown": []}
    accuracy = {}
    warm_cache = os.path.join(where, "warm-cache")
    for i in range(TTR_ROUNDS + 1):  # round 0 fills the warm cache
        for kind in ("cold", "warm", "sklearn", "floor"):
            if kind == "floor":
                t = time.perf_counter()
                run_python(["-c", FLOOR], check=True)
                wall = time.perf_counter() - t
            elif kind == "sklearn":
                t = time.perf_counter()
                out = run_python(["-c", SKLEARN, os.path.join(where, "digits.npz"),
                                  str(TTR_EPOCHS)], env=one_thread, capture_output=True,
                                 text=True, check=True).stdout.split()
                wall, accuracy["sklearn"] = time.perf_counter() - t, float(out[0])
            else:
                cache = warm_cache if kind == "warm" else os.path.join(where, f"cold-{i}")
                out_dir = os.path.join(where, f"{kind}-{i}")
                t = time.perf_counter()
                shown = train_shown(["--epochs", str(TTR_EPOCHS), "--quiet", "--out", out_dir],
                                    dict(os.environ, MLP_JAX_COMPILE_CACHE=cache))
                wall = time.perf_counter() - t
                if i:
                    runs[f"{kind}_shown"].append(shown - t)
                with open(os.path.join(out_dir, "summary.json")) as f:
                    accuracy["mlp_jax"] = json.load(f)["test_acc"]
            if i:
                runs[kind].append(wall)
    shutil.rmtree(where, ignore_errors=True)
    out = {k: statistics.median(v) for k, v in runs.items()}
    return {"epochs": TTR_EPOCHS, "rounds": TTR_ROUNDS, "seconds": out, "all": runs,
            "test_acc": accuracy}


ttr = results["time_to_result"] = time_to_result()
tt, acc = ttr["seconds"], ttr["test_acc"]
print(f"\nTime to result, {TTR_EPOCHS} epochs on digits (medians of {TTR_ROUNDS}): mlp-jax train "
      f"warm {tt['warm']:.2f} s, cold {tt['cold']:.2f} s (test acc {acc['mlp_jax']:.4f}); "
      f"scikit-learn MLPClassifier, 1 thread, {tt['sklearn']:.2f} s (test acc "
      f"{acc['sklearn']:.4f}): warm x{tt['warm'] / tt['sklearn']:.2f}, cold "
      f"x{tt['cold'] / tt['sklearn']:.2f} its time; the floor (a fresh Python importing jax, "
      f"one op, matplotlib) {tt['floor']:.2f} s: sklearn's job x{tt['sklearn'] / tt['floor']:.2f}"
      f", warm train x{tt['warm'] / tt['floor']:.2f} of it; train's result shown at "
      f"{tt['warm_shown']:.2f} s warm, {tt['cold_shown']:.2f} s cold")


child = run_python(["-m", "experiments.benchmark", "--memory-child", str(MEMORY_N)],
                   capture_output=True, text=True)
mem = json.loads(child.stdout.strip().splitlines()[-1])
mem["ratio"] = (mem["peak_bytes"] - mem["baseline_bytes"]) / mem["dataset_bytes"]
results["memory"] = mem
print(f"\nMemory: 2 epochs over {MEMORY_N} x {D} float32 ({mem['dataset_bytes'] / 2**20:.0f} MiB): "
      f"peak RSS {(mem['peak_bytes'] - mem['baseline_bytes']) / 2**20:.0f} MiB above the "
      f"post-import baseline = x{mem['ratio']:.2f} the dataset")
results["self_rss_max_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"\nwrote {write_json('benchmark', results, QUICK)}")
