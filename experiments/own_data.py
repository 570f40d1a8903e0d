"""Memory of training on a large file of your own: ``mlp-jax train --data big.npz``.

Writes a 1,000,000 x 100 float32 ``.npz`` (400 MB of features, 10 classes), then trains
one epoch on it through the command line in a child process and reads the child's peak
resident memory above its post-import baseline, in copies of the data. In the same run:
the floor, a child that only reads the file (``np.load``: one copy), and the same
command on a 2,000-example file, whose peak is what does not grow with the data
(compiled programs, XLA's runtime). The goal: at most two
copies.

    python -m experiments.own_data            # about a minute on 2 cores
    python -m experiments.own_data --quick    # 20,000 x 100, seconds
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np

from experiments.common import figure_path, quick_mode, rss_peak, run_python, write_json

N, D, C = (20_000 if quick_mode() else 1_000_000), 100, 10
SMALL = 2_000  # the same command on a small file: what does not grow with the data
TRAIN = ["--epochs", "1", "--hidden", "100", "--batch-size", "1000", "--quiet"]


def child(what: str, path: str) -> dict:
    """In a fresh process: import, start JAX, note the baseline, then read or train."""
    import jax.numpy as jnp

    from mlp_jax import cli

    jnp.zeros(1).block_until_ready()
    base = rss_peak()
    t0 = time.perf_counter()
    if what == "read":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        assert arrays["X"].shape[1] == D
    else:
        code = cli.main(["train", "--data", path, "--out", path + ".run"] + TRAIN)
        assert code == 0, code
    return {"baseline_bytes": base, "peak_bytes": rss_peak(),
            "seconds": time.perf_counter() - t0}


def write(path: str, n: int) -> int:
    """An .npz of n x D float32 features and labels learnable from them; its bytes."""
    rng = np.random.default_rng(0)
    X = np.empty((n, D), np.float32)
    for i in range(0, n, 100_000):  # in blocks: this process never holds float64 X
        X[i:i + 100_000] = rng.standard_normal((min(100_000, n - i), D), np.float32)
    y = np.argmax(X[:, :C] + 0.5 * rng.standard_normal((n, C), np.float32), axis=1)
    np.savez(path, X=X, y=y)
    return X.nbytes + y.nbytes


def main():
    quick = quick_mode()
    runs, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for what, n in (("read", N), ("train", N), ("train_small", SMALL)):
            path = os.path.join(tmp, f"{n}.npz")
            if n not in sizes:
                sizes[n] = write(path, n)
            size = sizes[n]
            proc = run_python(["-m", "experiments.own_data", "--child", what.split("_")[0],
                               path] + (["--quick"] if quick else []),
                              capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r.update(N=n, data_bytes=size, above_baseline=r["peak_bytes"] - r["baseline_bytes"])
            r["copies"] = r["above_baseline"] / size
            runs[what] = r
            print(f"{what:11s} {n:>9,} x {D}: peak {r['above_baseline'] / 2**20:6.0f} MiB above "
                  f"the post-import baseline = {r['copies']:5.2f} copies of the data "
                  f"({size / 2**20:.0f} MiB); {r['seconds']:.1f} s")
    big, small = runs["train"], runs["train_small"]
    net = (big["above_baseline"] - small["above_baseline"]) / (big["data_bytes"]
                                                               - small["data_bytes"])
    runs["net_copies"] = net
    print(f"training on the {N:,}-example file holds {big['copies']:.2f} copies of the data "
          f"in all (goal <= 2); less what the same command takes on a {SMALL:,}-example file "
          f"(compiled programs, the runtime: {small['above_baseline'] / 2**20:.0f} MiB), "
          f"{net:.2f} copies grow with the data; reading the file alone: "
          f"{runs['read']['copies']:.2f}")
    out = {"D": D, "train_options": TRAIN, **runs}
    print(f"wrote {write_json('own_data', out, quick)}")
    print(f"wrote {plot(runs, quick)}")


def plot(runs: dict, quick: bool) -> str:
    """Peak memory above the baseline per run, against the data's size and the goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mib = 2**20
    data_mib = runs["train"]["data_bytes"] / mib
    names = {"read": f"read the file\n({N:,} x {D})", "train": f"train on it\n({N:,} x {D})",
             "train_small": f"train on\n{SMALL:,} x {D}"}
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(list(names.values()), [runs[k]["above_baseline"] / mib for k in names],
                  color=["#999999", "#1f77b4", "#aec7e8"])
    ax.bar_label(bars, labels=[f"{runs[k]['above_baseline'] / mib:.0f} MiB" for k in names])
    for copies, style in ((1, ":"), (2, "--")):
        ax.axhline(copies * data_mib, color="k", ls=style, lw=1)
        ax.text(2.45, copies * data_mib, f" {copies} x the data" + (" (goal)" if copies == 2
                                                                   else ""), va="bottom",
                ha="right", fontsize=8)
    ax.set(ylabel="peak RSS above the post-import baseline (MiB)",
           title=f"mlp-jax train --data: {runs['train']['copies']:.2f} copies of the data "
                 f"at the peak")
    fig.tight_layout()
    path = figure_path("own_data", quick)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        print(json.dumps(child(sys.argv[i + 1], sys.argv[i + 2])))
    else:
        main()
