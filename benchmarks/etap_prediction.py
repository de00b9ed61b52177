"""How well ETAP predicts MTL gains from few trained groups (ETAP Tables 3 and 5).

    python benchmarks/etap_prediction.py [--table digits10] [--draws 5] [--out FILE]

For |G_train| in {5, 10, 20} random training groups (``--draws`` draws each), fits the
predictor on their gains on the table's validation split (what a selection method may read)
and reports Pearson correlation and R^2 against the test-split gains of all other groups: the
raw group affinity (eq. 7), the affinity-to-gain map alone (stage 1) and ETAP with the
residual correction (stage 2). Rows give the mean over the draws and ETAP's range; every
draw's values are kept in the JSON.
"""

from __future__ import annotations

import argparse

import numpy as np

from baselines.grouping import GroupingProblem
from harness.bench import BenchReport, add_out_argument, positive_int
from mtl_envs.training.affinity import group_affinity
from mtl_envs.training.gain_prediction import ETAPPredictor, prediction_quality
from mtl_envs.training.group_trainer import load_gain_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="digits10")
    parser.add_argument("--draws", type=positive_int, default=5)
    add_out_argument(parser)
    args = parser.parse_args()
    report = BenchReport.from_args("etap_prediction", args)
    problem = GroupingProblem(load_gain_table(args.table), "etap", "val")
    affinity = problem.affinity("etap")
    # Groups of two or more tasks, as in ETAP's tables: a task alone has no gain to predict.
    multi = [i for i, g in enumerate(problem.candidates) if len(g) > 1]
    candidates = [problem.candidates[i] for i in multi]
    learn, truth = problem.matrix("val")[multi], problem.matrix("test")[multi]
    print(
        f"{'|G_train|':>9}  {'affinity r':>10}  {'stage 1 r':>9}  {'stage 1 R2':>10}  "
        f"{'ETAP r':>7}  {'ETAP R2':>7}"
    )
    for k in (5, 10, 20):
        rows = []
        for draw in range(args.draws):
            rng = np.random.default_rng(draw)
            picked = set(rng.choice(len(candidates), k, replace=False).tolist())
            train = [candidates[i] for i in picked]
            gains = {g: {t: learn[candidates.index(g), t] for t in g} for g in train}
            held = [i for i in range(len(candidates)) if i not in picked]
            true = [truth[i, t] for i in held for t in candidates[i]]
            raw = [group_affinity(affinity, candidates[i])[t] for i in held for t in candidates[i]]
            stats = [float(np.corrcoef(raw, true)[0, 1])]
            for residual in (False, True):
                model = ETAPPredictor(affinity, residual=residual, seed=draw).fit(train, gains)
                pred = [model.predict(candidates[i])[t] for i in held for t in candidates[i]]
                q = prediction_quality(pred, true)
                stats += [q["pearson"], q["r2"]]
            rows.append(stats)
        rows = np.asarray(rows)
        m = rows.mean(axis=0)
        print(
            f"{k:9d}  {m[0]:10.3f}  {m[1]:9.3f}  {m[2]:10.3f}  {m[3]:7.3f}  {m[4]:7.3f}", flush=True
        )
        report.add(
            f"{args.table}, |G_train| = {k}, mean of {args.draws} draws [range]",
            f"affinity r {m[0]:.3f}; stage 1 r {m[1]:.3f}, R^2 {m[2]:.3f}; "
            f"ETAP r {m[3]:.3f} [{rows[:, 3].min():.3f}, {rows[:, 3].max():.3f}], "
            f"R^2 {m[4]:.3f} [{rows[:, 4].min():.3f}, {rows[:, 4].max():.3f}]",
            "",
            groups=k,
            affinity_r=m[0],
            stage1_r=m[1],
            stage1_r2=m[2],
            etap_r=m[3],
            etap_r2=m[4],
            per_draw={
                name: rows[:, i].tolist()
                for i, name in enumerate(
                    ["affinity_r", "stage1_r", "stage1_r2", "etap_r", "etap_r2"]
                )
            },
        )


if __name__ == "__main__":
    main()
