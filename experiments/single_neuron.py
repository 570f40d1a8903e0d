"""A single neuron as a linear classifier: logistic regression and a binary SVM, checked
against scikit-learn on the breast-cancer data; L2 as gradual forgetting.

    python -m experiments.single_neuron           # full (about 30 s)
    python -m experiments.single_neuron --quick   # seconds

Our objective is (1/N) sum_i L_i + reg ||w||^2; scikit-learn's is 1/2 ||w||^2 + C sum_i L_i.
Multiplying ours by N / (2 reg) gives theirs, so C = 1 / (2 N reg). Neither penalizes the
bias (LinearSVC would, so its intercept_scaling is made large enough not to matter).
Writes experiments/results/single_neuron.{json,png}.
"""

import os
import sys
import warnings

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlp_jax as mj  # noqa: E402
from experiments.common import figure_path, quick_mode, write_json  # noqa: E402
from mlp_jax import data, optim, train  # noqa: E402

QUICK = quick_mode()
REG = 1e-2  # our L2 strength
STEPS = {"logistic": 3_000 if QUICK else 20_000, "hinge": 3_000 if QUICK else 40_000}
LR = 0.05  # Adam, cosine-annealed to 0: full batch, so it settles on the optimum


def main():
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC, LinearSVC

    raw = load_breast_cancer()
    (Xte, yte), (Xtr, ytr) = data.split(raw.data, raw.target.astype(np.int32), [0.25], seed=0)
    Xtr, Xte = data.standardize(Xtr, Xte)
    N = len(Xtr)
    C = 1.0 / (2 * N * REG)
    print(f"breast cancer: {N} train / {len(Xte)} test, 30 features; reg {REG} <-> C = {C:.4f}")

    results = {"reg": REG, "C": C, "N": N}
    weights = {}
    for loss_name, labels in (("logistic", (0, 1)), ("hinge", (-1, 1))):
        ytr_l = np.where(ytr == 1, labels[1], labels[0])
        yte_l = np.where(yte == 1, labels[1], labels[0])
        ds = data.Dataset("cancer", Xtr, ytr_l, None, None, Xte, yte_l, 2)
        spec = mj.MLPSpec((30, 1), loss=loss_name, reg=REG, init="normal", weight_scale=1e-3)
        r = train.fit(spec, ds, optim.adam(optim.cosine(LR, STEPS[loss_name])),
                      epochs=STEPS[loss_name], batch_size=N, key=jax.random.key(0),
                      eval_every=STEPS[loss_name], progress=False)
        w_ours = np.asarray(r.state.params[0]["W"])[0]
        b_ours = float(r.state.params[0]["b"][0])
        acc_ours = train.evaluate(r.state.params, Xte, yte_l, spec)[1]
        if loss_name == "logistic":
            ref = LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(Xtr, ytr)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # liblinear's convergence chatter
                # random_state: liblinear visits the examples in a random order, and where it
                # stops short of the optimum (below) that order moves its answer
                ref = LinearSVC(C=C, loss="hinge", dual=True, tol=1e-8, max_iter=1_000_000,
                                intercept_scaling=1e3, random_state=0).fit(Xtr, ytr)
        w_ref, b_ref = ref.coef_[0], float(ref.intercept_[0])
        acc_ref = float((ref.predict(Xte) == yte).mean())
        rel = float(np.linalg.norm(w_ours - w_ref) / np.linalg.norm(w_ref))
        name = "logistic regression" if loss_name == "logistic" else "binary SVM (hinge)"

        def objective(w, b, yl=ytr_l, kind=loss_name):  # ours, in float64
            s = Xtr.astype(np.float64) @ w + b
            data_loss = np.logaddexp(0, s) - yl * s if kind == "logistic" else \
                np.maximum(0, 1 - yl * s)
            return float(data_loss.mean() + REG * w @ w)

        row = {"test_acc_ours": acc_ours, "test_acc_sklearn": acc_ref, "weight_rel_diff": rel,
               "bias_ours": b_ours, "bias_sklearn": b_ref,
               "objective_ours": objective(w_ours, b_ours),
               "objective_sklearn": objective(w_ref, b_ref)}
        print(f"{name}: test acc {acc_ours:.4f} (sklearn {acc_ref:.4f}); weights differ by "
              f"{rel:.2e} relative; bias {b_ours:.4f} vs {b_ref:.4f}; objective "
              f"{row['objective_ours']:.7f} vs {row['objective_sklearn']:.7f}")
        if loss_name == "hinge":
            # liblinear (LinearSVC) stops short of the optimum here; libsvm's exact QP does not.
            exact = SVC(C=C, kernel="linear", tol=1e-8).fit(Xtr, ytr)
            row["weight_rel_diff_vs_SVC_linear"] = float(
                np.linalg.norm(w_ours - exact.coef_[0]) / np.linalg.norm(exact.coef_[0]))
            row["objective_SVC_linear"] = objective(exact.coef_[0], float(exact.intercept_[0]))
            print(f"  vs SVC(kernel='linear'), the exact QP: weights differ by "
                  f"{row['weight_rel_diff_vs_SVC_linear']:.2e}; objective "
                  f"{row['objective_SVC_linear']:.7f}")
        results[loss_name] = row
        weights[name] = (w_ours, w_ref)

    # L2 as gradual forgetting: the penalty's part of an SGD step scales W by (1 - 2 lr reg).
    spec = mj.MLPSpec((30, 1), loss="logistic", reg=REG)
    p = mj.init_params(jax.random.key(1), spec)
    _, g_reg = mj.backprop(p, Xtr, np.where(ytr == 1, 1, 0), spec)
    _, g_0 = mj.backprop(p, Xtr, np.where(ytr == 1, 1, 0), spec,
                         hyper=spec.hyper()._replace(reg=0.0))
    lr = 0.1
    decay = 1 - float(np.median((lr * (g_reg[0]["W"] - g_0[0]["W"]) / p[0]["W"]) * -1 + 1))
    results["forgetting"] = {"lr": lr, "measured_decay_per_step": decay,
                             "formula_2_lr_reg": 2 * lr * REG}
    print(f"L2 as forgetting: each SGD step (lr {lr}) shrinks W by a factor 1 - {decay:.6f} "
          f"(2 lr reg = {2 * lr * REG:.6f}) before the data gradient acts")
    print(f"wrote {write_json('single_neuron', results, QUICK)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (name, (w_ours, w_ref)) in zip(axes, weights.items()):
        lim = 1.1 * max(np.abs(w_ref).max(), np.abs(w_ours).max())
        ax.plot([-lim, lim], [-lim, lim], color="gray", lw=0.8)
        ax.scatter(w_ref, w_ours, s=14)
        ax.set(xlabel="scikit-learn weight", ylabel="mlp_jax weight", title=name)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(figure_path("single_neuron", QUICK), dpi=90)


def readme(r: dict) -> list[str]:
    """This experiment's README block, from its JSON."""
    lg, hg = r["logistic"], r["hinge"]
    return [
        "### A single neuron is a linear classifier (`single_neuron`)", "",
        f"Breast cancer ({r['N']} train); our reg {r['reg']} ↔ scikit-learn "
        f"C = 1/(2·N·reg) = {r['C']:.4f}.", "",
        "| | test acc (ours / sklearn) | weights, relative difference "
        "| objective (ours / sklearn) |",
        "|---|---|---|---|",
        f"| sigmoid + logistic vs `LogisticRegression` | {lg['test_acc_ours']:.4f} / "
        f"{lg['test_acc_sklearn']:.4f} | {lg['weight_rel_diff']:.1e} | "
        f"{lg['objective_ours']:.7f} / {lg['objective_sklearn']:.7f} |",
        f"| linear + hinge vs `LinearSVC(loss='hinge')` | {hg['test_acc_ours']:.4f} / "
        f"{hg['test_acc_sklearn']:.4f} | {hg['weight_rel_diff']:.1e} | "
        f"{hg['objective_ours']:.7f} / {hg['objective_sklearn']:.7f} |",
        f"| linear + hinge vs `SVC(kernel='linear')` (exact QP) | | "
        f"{hg['weight_rel_diff_vs_SVC_linear']:.1e} | {hg['objective_ours']:.7f} / "
        f"{hg['objective_SVC_linear']:.7f} |", "",
        svm_sentence(hg) + " L2 as gradual forgetting: the penalty's part of each SGD step "
        f"scales W by 1 − {r['forgetting']['measured_decay_per_step']:.6f} "
        f"(= 2·lr·reg at lr {r['forgetting']['lr']})."]


def svm_sentence(hg: dict) -> str:
    """Where liblinear's LinearSVC stops, compared with ours and libsvm's exact QP."""
    ours, lin, qp = hg["objective_ours"], hg["objective_sklearn"], hg["objective_SVC_linear"]
    same = abs(ours - qp) <= 1e-6 * abs(qp)
    if lin > qp * (1 + 1e-4) and same:
        return (f"LinearSVC (liblinear) stops at a higher objective ({lin:.7f}) than the "
                f"optimum ({qp:.7f}), which our solution reaches too; its weights differ from "
                f"ours by {hg['weight_rel_diff']:.1e} while ours and the exact QP's differ by "
                f"{hg['weight_rel_diff_vs_SVC_linear']:.1e}.")
    return (f"Objectives: ours {ours:.7f}, LinearSVC {lin:.7f}, exact QP {qp:.7f} "
            f"({'ours matches the QP' if same else 'ours does not match the QP to 1e-6'}).")


if __name__ == "__main__":
    main()
