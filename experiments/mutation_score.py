"""The README's mutation score, from mutmut's results in ``mutants/``.

    mutmut run --max-children 2           # see the README's Development section
    python -m experiments.mutation_score  # print the table and rewrite it in README.md
    python -m experiments.mutation_score --changed main   # only the mutated modules that
                                          # changed since main: rerun them, print the table

Each mutant is killed (a test failed), survived (no test failed, or no test reaches its
line), timed out, or not run yet. The survivors listed in EQUIVALENT cannot be told apart
from the original by any input (each with the reason); every other survivor is a line no
test would notice being wrong, and needs a test.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import subprocess
import sys
import tomllib

from experiments.common import ROOT, write_readme_block

_ONE_COLUMN = "indexes column 1 of a one-column array, which jax clamps to column 0"
_GUARD = ("the guard only keeps exp from overflowing where `jnp.where` discards the value")
_UPPER = "einsum labels in capitals: the same contraction"
_SPEED = "compiled or op by op, the same numbers; only the speed differs"
_X64 = ("`asarray(x, float64)` -> `asarray(x)`: the forward converts x to the params' float64 "
        "anyway")
_NO_STATE = ("the empty kink state (an activation and loss without kinks) as another "
             "constant: the centre and every stencil point share it, so nothing straddles")
_FD64 = ("`flat.dtype` -> the default dtype: finite differences run in float64 inside "
         "enable_x64 (their documented use), where the default is float64")
_FALSY = ("`low_open=False` or `high_open=False` -> None: the check reads it as a truth "
          "value, and None is false as False is")
_IN_X64 = ("a float64 conversion -> the default dtype: the check runs inside enable_x64, "
           "where the default float is float64")
_TERM_NAME = ("a term of the allowance renamed: refine reads only `used`, which sums the "
              "terms whatever their names")
_NAN = '`float("nan")` -> `float("NAN")`: the same NaN'
_PROMOTED = ("one operand's float64 conversion dropped: the other is float64, and numpy "
             "promotes the difference and the sum to float64, where both casts are exact")
_DEFAULT64 = ("in the default dtype, not their float64 operand's: both checkers difference "
              "in float64 inside enable_x64, where the default is float64")
_ONE_ROW = ("indexes row 1 of the batch's mean or variance, a one-row array (kept 2-D), which "
            "jax clamps to row 0")
_ONE_CHUNK = ("chunk 1 of a single chunk (the branch for one): jax clamps the index to "
              "chunk 0")
EQUIVALENT = {  # mutmut's name (without the "mlp_jax." prefix) -> why no input tells it apart
    "activations.x_elu__mutmut_9": "ELU `z > 0` -> `z > 1` in the overflow guard: " + _GUARD,
    "activations.x_elu__mutmut_10": "ELU guard's 0.0 -> 1.0: " + _GUARD,
    "activations.x_elu__mutmut_30": "ELU' guard `z > 0` -> `z >= 0`: " + _GUARD,
    "activations.x_elu__mutmut_31": "ELU' guard `z > 0` -> `z > 1`: " + _GUARD,
    "activations.x_elu__mutmut_32": "ELU' guard's 0.0 -> 1.0: " + _GUARD,
    "activations.x_maxout__mutmut_17": "`[:, 0, :]` -> `[:, 1, :]` " + _ONE_COLUMN,
    "activations.x_maxout_backward__mutmut_5":
        "`reshape(1, k, 1)` -> `reshape(k, 1)`: the same broadcast against (N, k, H)",
    "layers.x_affine__mutmut_9": _UPPER,
    "layers.x_affine_backward__mutmut_10": _UPPER,
    "layers.x_affine_backward__mutmut_27": _UPPER,
    "losses.x__logsumexp__mutmut_23": "`[:, 0]` -> `[:, 1]` " + _ONE_COLUMN,
    "losses.x__softmax_value__mutmut_7": "`[:, 0]` -> `[:, 1]` " + _ONE_COLUMN,
    "losses.x__svm_margins__mutmut_17":
        "the one-hot mask as float 0/1 instead of bool: `jnp.where` reads it the same",
    "losses.x__logistic_value__mutmut_2": "`[:, 0]` -> `[:, 1]` " + _ONE_COLUMN,
    "losses.x__logistic_grad__mutmut_3": "`[:, 0]` -> `[:, 1]` " + _ONE_COLUMN,
    "losses.x__hinge_value__mutmut_5": "`[:, 0]` -> `[:, 1]` " + _ONE_COLUMN,
    "losses.x__hinge_grad__mutmut_5": "`[:, 0]` -> `[:, 1]` " + _ONE_COLUMN,
    "losses.x__hinge_kinks__mutmut_4": "`[:, 0]` -> `[:, 1]` " + _ONE_COLUMN,
    "network.x__check_key__mutmut_2":
        "`key is None or ...` -> `key is None and ...`: None, ints and floats have no dtype, "
        "so the last clause refuses them anyway",
    "network.x_forward_with_cache__mutmut_121": _ONE_ROW,
    "network.x_forward_with_cache__mutmut_122": _ONE_ROW,
    "gradcheck.x_check_grads__mutmut_5": "`jit` defaults to False: " + _SPEED,
    "backprop.x_backprop_and_stats__mutmut_63":
        "`need_dx=layer > 0` dropped: the first layer's input gradient is computed too, "
        "then never used (the loop stops there): the same numbers, a little slower",
    "backprop.x_backprop_and_stats__mutmut_68": "`layer > 0` -> `layer >= 0` there: as the "
                                               "one before",
    "optim.x_constant__mutmut_4": _FALSY,
    "optim.x_step_decay__mutmut_4": _FALSY,
    "optim.x_step_decay__mutmut_17": _FALSY,
    "optim.x_exponential__mutmut_4": _FALSY,
    "optim.x_exponential__mutmut_17": _FALSY,
    "optim.x_cosine__mutmut_5": _FALSY,
    "optim.x_cosine__mutmut_24": _FALSY,
    "optim.x_cosine__mutmut_25": _FALSY,
    "optim.x_linear_warmup__mutmut_4": _FALSY,
    "optim.x_sgd__mutmut_4": _FALSY,
    "optim.x__with_velocity__mutmut_4": _FALSY,
    "optim.x__with_velocity__mutmut_15": _FALSY,
    "optim.x_rmsprop__mutmut_6": _FALSY,
    "optim.x_rmsprop__mutmut_19": _FALSY,
    "optim.x_adam__mutmut_8": _FALSY,
    "optim.x_adam__mutmut_25": _FALSY,
    "optim.x_adam__mutmut_46": _FALSY,
    "optim.x__check__mutmut_7":
        "`asarray(value, float64)` -> `asarray(value)`: for any number or numeric array (what "
        "a factory takes) isfinite and the comparisons read the same",
    "optim.x__check__mutmut_9": "as the one before, with the dtype argument dropped",
    "layers.x_normalize_by__mutmut_5":
        "`asarray(eps, z.dtype)` -> `asarray(eps, None)`: a Python float's array is weakly "
        "typed, so `var + eps` stays in var's dtype, which is z's (checked with float64 "
        "enabled too)",
    "layers.x_normalize_by__mutmut_7": "as the one before, with the dtype argument dropped",
    "gradcheck.x__all_three__mutmut_104":
        "`finfo(scores.dtype)` -> `finfo(None)`: the check always runs in float64, the default",
    "finitediff.x_refine__mutmut_18": _TERM_NAME,
    "finitediff.x_refine__mutmut_19": _TERM_NAME,
    "finitediff.x_refine__mutmut_20": _TERM_NAME,
    "finitediff.x_refine__mutmut_21": _TERM_NAME,
    "gradcheck.x_check_grads__mutmut_52": _X64,
    "gradcheck.x_check_grads__mutmut_54": _X64,
    "gradcheck.x_check_grads__mutmut_58": _IN_X64,
    "gradcheck.x_check_grads__mutmut_65": _IN_X64,
    "gradcheck.x_check_grads__mutmut_67": _IN_X64,
    "gradcheck.x_check_grads__mutmut_77":
        "running statistics not converted to float64: the forward casts them to the params' "
        "float64 where it uses them",
    "gradcheck.x_check_grads__mutmut_79": "as the one before, with the dtype argument dropped",
    "gradcheck.x_check_grads__mutmut_110": "`jit` ignored: " + _SPEED,
    "gradcheck.x_check_grads__mutmut_196":
        "`finfo(np.float64)` -> `finfo(None)`: numpy's default is float64",
    "gradcheck.x_check_grads__mutmut_214":
        "`max(..., initial=0.0)` -> `initial=None`: no leaf is empty (sizes are positive)",
    "gradcheck.x_check_grads__mutmut_216": "`initial=0.0` dropped: as the one before",
    "finitediff.x__kink_state__mutmut_12":
        "kink state `z > k` -> `z >= k`: the two differ only when a stencil point lands exactly "
        "on a kink and the centre does not; the activation is continuous there, so including "
        "or leaving out that entry are both right",
    "finitediff.x__kink_state__mutmut_21": _NO_STATE,
    "finitediff.x__kink_state__mutmut_23": _NO_STATE,
    "finitediff.x__kink_state__mutmut_26":
        "kink states as floats instead of int32: `!=` compares them the same",
    "finitediff.x_finite_differences__mutmut_15": _FD64,
    "finitediff.x_finite_differences__mutmut_72":
        "`fd_chunk_size(P, itemsize)` -> its default itemsize 8: float64's, the documented use",
    "finitediff.x_finite_differences__mutmut_76": _FD64,
    "finitediff.x_finite_differences__mutmut_79": _FD64,
    "losses.x_predicted_labels__mutmut_9": "`[:, 0]` -> `[:, 1]` " + _ONE_COLUMN,
    "losses.x_predicted_labels__mutmut_19": "`[:, 0]` -> `[:, 1]` " + _ONE_COLUMN,
    "optim.x__float__mutmut_5":
        "`canonicalize_dtype(jnp.float64)` -> `canonicalize_dtype(None)`: both are the "
        "default float, float64 with float64 enabled and float32 without",
    "passrule.xǁComparisonǁnone__mutmut_22": _NAN,
    "passrule.xǁComparisonǁnone__mutmut_25": _NAN,
    "passrule.x_rel_error__mutmut_3": _PROMOTED,
    "passrule.x_rel_error__mutmut_5": _PROMOTED,
    "passrule.x_rel_error__mutmut_7": _PROMOTED,
    "passrule.x_rel_error__mutmut_9": _PROMOTED,
    "passrule.x_judge__mutmut_17":
        "`sum(terms) if terms else zeros` -> always the sum: of no terms it is 0, which "
        "broadcasts as the zeros would (and 0 divides the same)",
    "passrule.xǁComparisonǁbest__mutmut_47":
        "entries left out marked -2 rather than -1 before the argmax: any entry's share is "
        "0 or more (or NaN, inf), so either mark loses",
    "finitediff.x_pick_entries__mutmut_23":
        "`fd_entries >= n` -> `>`: at fd_entries == n a draw of n of n entries, sorted, is "
        "every entry, as arange is (only later leaves' draws change, still uniform ones)",
    "finitediff.x_pick_entries__mutmut_27":
        "`replace=False` -> `replace=None`: numpy reads it as a truth value",
    "finitediff.x_chunk_size__mutmut_1":
        "the default itemsize 8 -> 9: only the size of the chunks changes, not what each "
        "probe computes (the last chunk is padded either way)",
    "finitediff.x_chunk_size__mutmut_13":
        "`//` -> `/` inside `int(max(1, ...))`: int() truncates a positive quotient as // does",
    "finitediff.x_stencil__mutmut_4": "the stencil's offsets " + _DEFAULT64,
    "finitediff.x_stencil__mutmut_6": "the stencil's offsets " + _DEFAULT64,
    "finitediff.x_stencil__mutmut_75": _ONE_CHUNK,
    "finitediff.x_stencil__mutmut_77": _ONE_CHUNK,
    "finitediff.x_estimate__mutmut_26": "the estimate's weights " + _DEFAULT64,
    "finitediff.x_estimate__mutmut_28": "the estimate's weights " + _DEFAULT64,
    "gradcheck.x__all_three__mutmut_64":
        "the second cotangent 1/3 -> 2/3: twice 1/3 exactly, so its backward pass is twice "
        "1/3's to the bit (scaling by 2 is exact), the same rounding measured",
}


def load(root: str = os.path.join(ROOT, "mutants")) -> dict[str, int | None]:
    """mutmut's exit code per mutant: 1 killed, 0 survived, None not run (others: rerun)."""
    codes = {}
    for path in sorted(glob.glob(os.path.join(root, "mlp_jax", "*.meta"))):
        with open(path) as f:
            codes.update(json.load(f)["exit_code_by_key"])
    return codes


# mutmut's exit codes (mutmut.stats.status_by_exit_code): 1 a test failed, 3 pytest's own
# error (a kill too); 0 every test passed, 5 and 33 no test reaches the line (as unnoticed
# as a survivor); None not run, 2 interrupted; the rest timeouts and crashes
KILLED, SURVIVED, NOT_RUN = {1, 3}, {0, 5, 33}, {None, 2}


def status(code: int | None) -> str:
    return ("killed" if code in KILLED else "survived" if code in SURVIVED
            else "not run" if code in NOT_RUN else "timeout")


def score(codes: dict[str, int | None], equivalent=EQUIVALENT) -> dict[str, collections.Counter]:
    """Per module: mutants, killed, equivalent, survived (not equivalent), timeout, not run."""
    table = collections.defaultdict(collections.Counter)
    for name, code in codes.items():
        short = name.removeprefix("mlp_jax.")
        row = table[short.split(".")[0]]
        row["mutants"] += 1
        kind = status(code)
        row["equivalent" if kind == "survived" and short in equivalent else kind] += 1
    return table


def markdown(table) -> str:
    cols = ["mutants", "killed", "equivalent", "survived", "timeout", "not run"]
    lines = ["| module | " + " | ".join(cols) + " | score |", "|---" * (len(cols) + 2) + "|"]
    total = collections.Counter()
    for module in sorted(table):
        total.update(table[module])
    for module, row in [*sorted(table.items()), ("all", total)]:
        run = row["killed"] + row["survived"]
        share = f"{row['killed'] / run:.1%}" if run else "-"
        lines.append(f"| {module} | " + " | ".join(str(row[c]) for c in cols) + f" | {share} |")
    return "\n".join(lines)


def section(codes) -> str:
    found = {n.removeprefix("mlp_jax.") for n, c in codes.items() if status(c) == "survived"}
    listed = [f"- `{name}`: {why}" for name, why in EQUIVALENT.items() if name in found]
    unnoticed = [f"- `{name}`" for name in sorted(found - set(EQUIVALENT))]
    lines = [markdown(score(codes)), "",
             "Score: killed / (killed + survived); the equivalent survivors are left out, and a "
             "timeout (a mutant that hangs the tests) is neither.", ""]
    if unnoticed:
        lines += [f"<details><summary>The {len(unnoticed)} survivors no test notices yet "
                  "(`mutmut show NAME`)</summary>", "", *unnoticed, "", "</details>", ""]
    lines += [f"<details><summary>The {len(listed)} equivalent survivors, each with why no "
              "input tells it apart</summary>", "", *listed, "", "</details>"]
    return "\n".join(lines)


def mutated_modules(root: str = ROOT) -> list[str]:
    """The files ``mutmut run`` mutates (pyproject's [tool.mutmut] only_mutate)."""
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["mutmut"]["only_mutate"]


def changed_patterns(changed: list[str], mutated: list[str]) -> list[str]:
    """mutmut name patterns for the mutated files among CHANGED paths."""
    return [f"mlp_jax.{os.path.basename(p).removesuffix('.py')}.*"
            for p in mutated if p in changed]


def rerun_changed(base: str) -> dict[str, int | None]:
    """``mutmut run`` on every mutant of the mutated modules that differ from BASE
    (committed or not); returns the results of those modules only."""
    git = subprocess.run(["git", "diff", "--name-only", base, "--"], cwd=ROOT,
                         capture_output=True, text=True)
    if git.returncode:
        raise SystemExit(f"--changed {base}: git cannot compare with it: "
                         f"{git.stderr.strip().splitlines()[0]}")
    diff = git.stdout.split()
    patterns = changed_patterns(diff, mutated_modules())
    if not patterns:
        raise SystemExit(f"no mutated module changed since {base}")
    print("mutmut run " + " ".join(patterns), flush=True)
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "mutmut"), "run",
                    "--max-children", str(os.cpu_count() or 1), *patterns], cwd=ROOT, check=True)
    modules = tuple(p.removesuffix("*") for p in patterns)
    return {n: c for n, c in load().items() if n.startswith(modules)}


if __name__ == "__main__":
    changed = "--changed" in sys.argv
    if changed and sys.argv[-1] == "--changed":
        raise SystemExit("--changed needs the commit to compare with, e.g. --changed main")
    codes = rerun_changed(sys.argv[sys.argv.index("--changed") + 1]) if changed else load()
    if not codes:
        raise SystemExit("no mutmut results in mutants/: run `mutmut run` first")
    missing = [n for n, c in codes.items()
               if status(c) == "survived" and n[len("mlp_jax."):] not in EQUIVALENT]
    print(markdown(score(codes)))
    for name in missing:
        print(f"survived, not known equivalent: {name} (`mutmut show {name}`)")
    if not changed:  # the README's table is the whole run's
        path = write_readme_block("mutation", section(codes))
        print(f"rewrote the mutation score in {path}")
