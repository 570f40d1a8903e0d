"""The benchmark's README block and its goals: ``experiments.benchmark`` measures,
``readme`` renders its JSON as the README's performance tables (``experiments.report``
writes them), each ratio beside the goal it is held to.

The goals live here once: the tables print them, the benchmark prints the one it
checks as it runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    """A ratio's target and its direction (``"<="`` or ``">="``), shown as ``unit``
    (``"×"``, ``"%"`` for a share, ``""`` for a plain number)."""

    op: str
    target: float
    unit: str = "×"

    def met(self, value: float) -> bool:
        return value <= self.target if self.op == "<=" else value >= self.target

    def cell(self, value: float) -> str:
        """The table's goal cell: the target and ✓ or ✗ for ``value``."""
        target = f"{self.target:.0%}" if self.unit == "%" else f"{self.target:g}{self.unit}"
        return f"{'≤' if self.op == '<=' else '≥'} {target} {'✓' if self.met(value) else '✗'}"


GOALS = {
    "spiral_vs_numpy": Goal(">=", 4.5),  # numpy's time over the fused training's
    "cifar_vs_products": Goal("<=", 1.0, "%"),  # the step's time over its two products'
    "cifar_of_roofline": Goal(">=", 0.80, "%"),  # the roofline's time over the step's
    "cifar_numpy_vs_step": Goal(">=", 1.0, ""),  # numpy's step time over ours
    "cifar_torch_vs_step": Goal(">=", 1.0, ""),  # PyTorch eager's step time over ours
    "sweep_vs_sequential": Goal(">=", 2.5),  # sequential calls' time over one sweep's
    "memory_vs_data": Goal("<=", 1.5),  # peak RSS above baseline over the data's bytes
    "norm_vs_plain": Goal("<=", 1.3),  # a step with a norm over the plain step
    "sweep_again_vs_program": Goal("<=", 1.1),  # a second sweep() over its program alone
    "train_warm_vs_sklearn": Goal("<=", 1.0),  # mlp-jax train (warm cache) over sklearn's
    "train_cold_vs_sklearn": Goal("<=", 1.5),  # ... with an empty compilation cache
}


def _again_rows(r: dict) -> list[str]:
    """A second ``sweep()`` against its compiled program, and the quick start's job end
    to end against scikit-learn's (rows of a benchmark run that measured them)."""
    sw, rows = r["sweep"], []
    if "api_second_s" in sw:
        program = sw["variants_s"][sw["api_program"]]
        again = sw["api_second_s"] / program
        rows.append(f"| `sweep()` called again with the same configuration (the first call: "
                    f"{sw['api_first_s']:.2f} s) | {sw['api_second_s']:.2f} s | its compiled "
                    f"program alone ({sw['api_program']}) {program:.2f} s | {again:.2f}× | "
                    f"{GOALS['sweep_again_vs_program'].cell(again)} |")
    if "time_to_result" in r:
        t = r["time_to_result"]
        sec, acc = t["seconds"], t["test_acc"]
        warm, cold = sec["warm"] / sec["sklearn"], sec["cold"] / sec["sklearn"]
        shown = {k: f" (its result shown at {sec[k + '_shown']:.2f} s)"
                 if k + "_shown" in sec else "" for k in ("warm", "cold")}
        rows += [f"| the quick start's `mlp-jax train` (digits, {t['epochs']} epochs), end "
                 f"to end in a fresh process, warm compilation cache | {sec['warm']:.2f} s"
                 f"{shown['warm']}, test acc {acc['mlp_jax']:.4f} | scikit-learn "
                 f"`MLPClassifier` (same split, width, batch, lr, epochs; 1 BLAS thread) "
                 f"{sec['sklearn']:.2f} s, test acc "
                 f"{acc['sklearn']:.4f} | {warm:.2f}× its time | "
                 f"{GOALS['train_warm_vs_sklearn'].cell(warm)} |",
                 f"| … cold (an empty compilation cache) | {sec['cold']:.2f} s{shown['cold']} | | "
                 f"{cold:.2f}× | {GOALS['train_cold_vs_sklearn'].cell(cold)} |"]
        if "floor" in sec:  # the limit under both goals, measured in the same run
            rows.append(
                f"| … the floor: a fresh Python importing jax (one op) and matplotlib, which "
                f"every run pays before it computes | {sec['floor']:.2f} s | scikit-learn's "
                f"job above | its time is {sec['sklearn'] / sec['floor']:.2f}× the floor; "
                f"warm train {sec['warm'] / sec['floor']:.2f}× | limit |")
    return rows


def _sweep_rows(sw: dict, goal_column: bool = True) -> list[str]:
    """One row per sweep variant: its time and throughput over the sequential calls."""
    end = " |" if goal_column else ""
    return [f"| … {name} | {t:.2f} s | | {sw['sequential_s'] / t:.2f}× |{end}"
            for name, t in sw["variants_s"].items()]


def readme(r: dict, gpu: dict | None = None) -> list[str]:
    """The README's performance tables, from benchmark.json (and from benchmark_gpu.json,
    a run on a GPU machine, where there is one)."""
    v = r["versions"]
    c = r["cifar_step"]
    bp = c["backprop"]["ms"]
    of_roof = c["roofline"]["ms"] / bp
    vs_products = bp / c["product_shapes"]["ms"]
    sp, sw, mem = r["spiral"], r["sweep"], r["memory"]
    best_name, best_t = min(sw["variants_s"].items(), key=lambda kv: kv[1])
    rows = [
        f"| CIFAR-shaped step (3072-100-10, batch 256, SGD), hand backprop | {bp:.3f} ms, "
        f"{c['backprop']['gflops']:.0f} GFLOP/s | | | |",
        f"| … vs `jax.grad` step | | {c['autodiff']['ms']:.3f} ms | backprop/autodiff "
        f"{bp / c['autodiff']['ms']:.2f}; XLA temp memory {c['backprop']['temp_bytes'] / 1e6:.2f}"
        f" / {c['autodiff']['temp_bytes'] / 1e6:.2f} MB | ≈ 1 (same products) |",
        *[f"| … with {norm} after the hidden affine map (hand backprop) | "
          f"{c[norm]['ms']:.3f} ms | the plain step above | {c[norm]['ms'] / bp:.2f}× the "
          f"plain step | {GOALS['norm_vs_plain'].cell(c[norm]['ms'] / bp)} |"
          for norm in ("batchnorm", "layernorm") if norm in c],
        f"| … vs numpy (CS231n style) | | {c['numpy']['ms']:.3f} ms | "
        f"{c['numpy']['ms'] / bp:.2f}× faster | "
        f"{GOALS['cifar_numpy_vs_step'].cell(c['numpy']['ms'] / bp)} |",
    ]
    if "torch_eager" in c:
        rows.append(f"| … vs PyTorch eager | | {c['torch_eager']['ms']:.3f} ms | "
                    f"{c['torch_eager']['ms'] / bp:.2f}× faster | "
                    f"{GOALS['cifar_torch_vs_step'].cell(c['torch_eager']['ms'] / bp)} |")
    rows += [
        f"| … vs its two big products alone, same shapes and layout (the limit for these "
        f"shapes) | | {c['product_shapes']['ms']:.3f} ms | step = {vs_products:.0%} of them | "
        f"{GOALS['cifar_vs_products'].cell(vs_products)} |",
        f"| … vs GEMM roofline ({r['gemm_gflops']:.0f} GFLOP/s on 2048³, same run) | | "
        f"{c['roofline']['ms']:.3f} ms | {of_roof:.0%} of roofline | "
        f"{GOALS['cifar_of_roofline'].cell(of_roof)} |",
        f"| spiral, {sp['steps']:,} full-batch steps, fused `lax.scan` | {sp['fused_s']:.3f} s"
        f" | numpy {sp['numpy_s']:.3f} s | {sp['numpy_s'] / sp['fused_s']:.1f}× | "
        f"{GOALS['spiral_vs_numpy'].cell(sp['numpy_s'] / sp['fused_s'])} |",
        f"| … vs Python loop of jitted steps | | {sp['python_loop_s']:.3f} s | "
        f"{sp['python_loop_s'] / sp['fused_s']:.1f}× | |",
        f"| {sw['configs']} spiral trainings × {sw['steps']} steps, one sweep ({best_name}) | "
        f"{best_t:.2f} s | {sw['configs']} sequential calls {sw['sequential_s']:.2f} s | "
        f"{sw['sequential_s'] / best_t:.2f}× | "
        f"{GOALS['sweep_vs_sequential'].cell(sw['sequential_s'] / best_t)} |",
        *_sweep_rows(sw),
        *_again_rows(r),
        f"| peak RSS over {mem['dataset_bytes'] / 2**20:.0f} MiB of float32 training data, "
        "above the post-import baseline | "
        f"{(mem['peak_bytes'] - mem['baseline_bytes']) / 2**20:.0f} MiB | | "
        f"{mem['ratio']:.2f}× the data | {GOALS['memory_vs_data'].cell(mem['ratio'])} |",
    ]
    cores = [k for k in sw["variants_s"] if not k.startswith("1 device")]
    scaling = ""
    if cores:
        many = cores[0].split(",")[0]
        one, more = sw["variants_s"]["1 device, map"], sw["variants_s"][f"{many}, map"]
        scaling = (f" Sharding the same `lax.map` sweep over {many} instead of 1 gives "
                   f"{one / more:.2f}× ({one:.2f} s → {more:.2f} s).")
    out = ["Regenerate with `python -m experiments.benchmark` (2.5–6 minutes on 2 cores, "
           "as the machine's speed varies; "
           "writes `experiments/results/benchmark.json`) and `python -m experiments.report`. "
           f"This run: {r['device']} ({r['platform']}), jax {v['jax']}, numpy {v['numpy']}"
           + (f", torch {v['torch']}" if v.get("torch") else "") + ". Ratios are the "
           "result; absolute times are context.", "",
           "| measurement | mlp_jax | peer | ratio | goal |", "|---|---|---|---|---|", *rows,
           "", f"Sweep: {sw['configs']} configurations on the {sw['backend']} backend, whose "
           f"default batching is `{sw['default_batching']}`.{scaling}", ""]
    if gpu is not None:
        g = gpu
        gv, gc, gs, gw = g["versions"], g["cifar_step"], g["spiral"], g["sweep"]
        gbp = gc["backprop"]["ms"]
        out += [f"On a GPU ({g['device']}, jax {gv['jax']}; the same script run on a lent "
                "machine, its JSON kept as `benchmark_gpu.json`; numpy and PyTorch peers on "
                "that machine's CPU):", "",
                "| measurement | mlp_jax | peer | ratio |", "|---|---|---|---|",
                f"| CIFAR-shaped step, hand backprop | {gbp:.3f} ms, "
                f"{gc['backprop']['gflops']:.0f} GFLOP/s | `jax.grad` {gc['autodiff']['ms']:.3f}"
                f" ms | backprop/autodiff {gbp / gc['autodiff']['ms']:.2f} |",
                f"| … vs its two big products alone | | {gc['product_shapes']['ms']:.3f} ms | "
                f"step = {gbp / gc['product_shapes']['ms']:.1f}× them (the rest: the small "
                "kernels and each call's dispatch, not timed apart) |",
                f"| spiral, {gs['steps']:,} fused steps | {gs['fused_s']:.3f} s | Python loop "
                f"{gs['python_loop_s']:.3f} s, numpy {gs['numpy_s']:.3f} s | "
                f"{gs['python_loop_s'] / gs['fused_s']:.1f}×, "
                f"{gs['numpy_s'] / gs['fused_s']:.1f}× |",
                f"| {gw['configs']} spiral trainings × {gw['steps']} steps, one sweep | | "
                f"{gw['configs']} sequential calls {gw['sequential_s']:.2f} s | |",
                *_sweep_rows(gw, goal_column=False), ""]
    return out
