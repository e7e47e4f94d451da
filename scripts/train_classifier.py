#!/usr/bin/env python
"""Train napari-calc's calibrated calcification and cluster scores.

Training uses generated phantoms ONLY, with seeds 1000-1999 (the accuracy
benchmark, ``benchmarks/accuracy.py``, uses seeds 0-19, never seen here).
Each training phantom draws its own spacing (0.05-0.2 mm, log-uniform, plus
the three benchmark spacings), density, difficulty and laterality from its
seed, so the model sees a broad range of acquisitions rather than the
benchmark's exact settings.

Stage 1 (calcifications): the detector's candidates (``detect()`` with
``keep_min_score=0``) are labelled 1 when greedily matched to a truth MC with
the evaluation rule of :mod:`napari_calc.core.evaluate` (distance <=
max(0.5 mm, diameter); one detection per MC, strongest first), else 0. A
logistic regression on the standardised features of
:mod:`napari_calc.core.score` is fitted by penalised maximum likelihood
(L-BFGS-B, small L2 penalty), with the coefficients of the contrast-like
features (:data:`~napari_calc.core.score.MONOTONE_FEATURES`) bounded below
by 0 so that the score is monotonic in contrast.

Stage 2 (clusters): with the stage-1 scores, the detector's clusters are
labelled 1 when matched to a truth cluster (evaluation rule), and a
logistic regression on the cluster features is fitted the same way (all
coefficients >= 0: more members and more confident members never lower the
cluster score).

Usage::

    python scripts/train_classifier.py [--seeds 1000 1119] [--workers 2]
        [--out napari_calc/data/calc_model.json]

No scikit-learn: numpy and scipy only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

TRAIN_SEEDS = (1000, 2000)  # half-open range reserved for training / tuning
BENCH_SPACINGS = (0.07, 0.1, 0.2)


def phantom_config(seed: int) -> dict:
    """Acquisition and anatomy of training phantom ``seed`` (deterministic)."""
    rng = np.random.default_rng([int(seed), 7])
    k = seed % 4
    if k < 3:
        spacing = BENCH_SPACINGS[k]
    else:
        spacing = float(np.exp(rng.uniform(np.log(0.05), np.log(0.2))))
    diff = rng.choice(["easy", "normal", "normal", "normal", "hard"])
    return dict(
        spacing_mm=round(spacing, 4),
        density=float(rng.uniform(0.05, 0.95)),
        difficulty=str(diff),
        laterality="L" if rng.random() < 0.5 else "R",
        n_clusters=int(rng.integers(1, 4)),
        n_singles=int(rng.integers(3, 10)),
    )


def candidates_of(seed: int):
    """(features, labels, cluster rows) of training phantom ``seed``."""
    from napari_calc.core.detect import detect
    from napari_calc.core.evaluate import match_calcifications, match_clusters
    from napari_calc.core.phantom import make_phantom
    from napari_calc.core.score import FEATURE_NAMES

    cfg = phantom_config(seed)
    ph = make_phantom(seed=seed, **cfg)
    det = detect(ph.image, keep_min_score=0.0, n_threads=1)
    calcs = det.calcifications.copy()
    ex = det.extra
    X = np.column_stack([ex["f_" + n].to_numpy(float) for n in FEATURE_NAMES]) if len(calcs) else \
        np.zeros((0, len(FEATURE_NAMES)))
    # greedy matching by detection strength (independent of the model being trained)
    calcs["score"] = ex["snr"].to_numpy(float) if len(calcs) else []
    m = match_calcifications(calcs, ph.truth)
    y = np.zeros(len(calcs), dtype=np.int8)
    pos = {ix: k for k, ix in enumerate(calcs.index)}
    for ix, tp in zip(m["det_index"], m["is_tp"]):
        if tp:
            y[pos[ix]] = 1
    return dict(seed=seed, cfg=cfg, X=X, y=y, y_mm=calcs["y_mm"].to_numpy(float),
                x_mm=calcs["x_mm"].to_numpy(float), truth=ph.truth, n_truth=len(ph.truth["calcifications"]))


def fit_logistic(X, y, *, nonneg=(), l2=1e-3, sample_weight=None):
    """Penalised logistic regression on standardised features.

    Returns dict(mean, scale, coef, intercept); coefficients listed in
    ``nonneg`` (indices) are constrained to be >= 0.
    """
    from scipy.optimize import minimize

    X = np.asarray(X, float)
    y = np.asarray(y, float)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
    mu = X.mean(axis=0)
    sc = X.std(axis=0)
    sc[sc < 1e-9] = 1.0
    Z = (X - mu) / sc
    n, d = Z.shape
    wsum = w.sum()

    def f(theta):
        b, c = theta[0], theta[1:]
        z = Z @ c + b
        # log(1 + exp(z)) - y z, stably
        loss = np.logaddexp(0.0, z) - y * z
        p = 0.5 * (1 + np.tanh(0.5 * z))
        g = w * (p - y)
        val = (w * loss).sum() / wsum + 0.5 * l2 * (c @ c)
        grad = np.concatenate([[g.sum()], Z.T @ g]) / wsum
        grad[1:] += l2 * c
        return val, grad

    bounds = [(None, None)] + [((0.0, None) if j in nonneg else (None, None)) for j in range(d)]
    theta0 = np.zeros(d + 1)
    pbar = np.clip((w * y).sum() / wsum, 1e-6, 1 - 1e-6)
    theta0[0] = math.log(pbar / (1 - pbar))
    res = minimize(f, theta0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 2000})
    return dict(mean=mu.tolist(), scale=sc.tolist(), coef=res.x[1:].tolist(), intercept=float(res.x[0]),
                converged=bool(res.success), loss=float(res.fun))


def calibration_table(p, y, bins=10):
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for a, b in zip(edges[:-1], edges[1:]):
        m = (p >= a) & (p < b) if b < 1 else (p >= a)
        if m.sum():
            rows.append((a, b, int(m.sum()), float(p[m].mean()), float(y[m].mean())))
    return rows


def cluster_rows(data, calc_model):
    """Cluster features and labels, with stage-1 scores, for every training phantom."""
    import pandas as pd

    from napari_calc.core.cluster import cluster_features, cluster_table
    from napari_calc.core.detect import DetectionParams, assign_clusters
    from napari_calc.core.evaluate import match_clusters
    from napari_calc.core.score import calc_probability

    Xs, ys = [], []
    p = DetectionParams()
    for d in data:
        prob = calc_probability(d["X"], calc_model) if len(d["X"]) else np.zeros(0)
        sp = d["cfg"]["spacing_mm"]
        calcs = pd.DataFrame({"row": d["y_mm"] / sp, "col": d["x_mm"] / sp, "y_mm": d["y_mm"],
                              "x_mm": d["x_mm"], "diameter_mm": 0.3, "score": prob,
                              "status": "candidate"})
        assign_clusters(calcs, p, 2)
        table = cluster_table(calcs, (sp, sp), ndim=2)
        ids, feats = cluster_features(calcs)
        assert np.array_equal(ids, table["cluster_id"].to_numpy(np.int64))
        if len(table) == 0:
            continue
        m = match_clusters(table, d["truth"])
        lab = np.zeros(len(table), dtype=np.int8)
        pos = {ix: k for k, ix in enumerate(table.index)}
        for ix, tp in zip(m["det_index"], m["is_tp"]):
            if tp:
                lab[pos[ix]] = 1
        Xs.append(feats)
        ys.append(lab)
    if not Xs:
        return np.zeros((0, 3)), np.zeros(0)
    return np.vstack(Xs), np.concatenate(ys)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", nargs=2, type=int, default=[1000, 1160],
                    help="half-open seed range, within 1000-1999")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "napari_calc", "data",
                                                  "calc_model.json"))
    ap.add_argument("--l2", type=float, default=1e-3)
    args = ap.parse_args(argv)
    a, b = args.seeds
    if not (TRAIN_SEEDS[0] <= a < b <= TRAIN_SEEDS[1]):
        ap.error(f"training seeds must lie in {TRAIN_SEEDS[0]}-{TRAIN_SEEDS[1] - 1} (0-999 are for benchmarks)")

    from napari_calc.core.score import CLUSTER_FEATURE_NAMES, FEATURE_NAMES, MONOTONE_FEATURES

    t0 = time.time()
    seeds = list(range(a, b))
    with ProcessPoolExecutor(args.workers) as ex:
        data = list(ex.map(candidates_of, seeds))
    X = np.vstack([d["X"] for d in data])
    y = np.concatenate([d["y"] for d in data])
    n_truth = sum(d["n_truth"] for d in data)
    print(f"{len(seeds)} phantoms, {len(y)} candidates, {int(y.sum())} matched of {n_truth} truth MCs "
          f"({time.time() - t0:.0f} s)")
    nonneg = [FEATURE_NAMES.index(f) for f in MONOTONE_FEATURES]
    calc = fit_logistic(X, y, nonneg=nonneg, l2=args.l2)
    calc["features"] = list(FEATURE_NAMES)
    model = {"calcification": calc}
    from napari_calc.core.score import calc_probability

    pr = calc_probability(X, model)
    print("calcification model:", "converged" if calc["converged"] else "NOT converged")
    for name, c in zip(FEATURE_NAMES, calc["coef"]):
        print(f"  {name:16s} {c:+.3f}")
    print("  calibration (bin, n, mean predicted, observed):")
    for lo, hi, n, pm, po in calibration_table(pr, y):
        print(f"    [{lo:.1f},{hi:.1f}) {n:7d} {pm:.3f} {po:.3f}")

    Xc, yc = cluster_rows(data, model)
    if len(yc) >= 10 and 0 < yc.sum() < len(yc):
        clu = fit_logistic(Xc, yc, nonneg=list(range(Xc.shape[1])), l2=args.l2)
        clu["features"] = list(CLUSTER_FEATURE_NAMES)
        model["cluster"] = clu
        pc = 0.5 * (1 + np.tanh(0.5 * (((Xc - np.array(clu["mean"])) / np.array(clu["scale"])) @
                                        np.array(clu["coef"]) + clu["intercept"])))
        print(f"cluster model: {len(yc)} clusters, {int(yc.sum())} true")
        for name, c in zip(CLUSTER_FEATURE_NAMES, clu["coef"]):
            print(f"  {name:16s} {c:+.3f}")
        for lo, hi, n, pm, po in calibration_table(pc, yc, bins=5):
            print(f"    [{lo:.1f},{hi:.1f}) {n:7d} {pm:.3f} {po:.3f}")
    model["training"] = {
        "script": "scripts/train_classifier.py",
        "seeds": [a, b],
        "n_phantoms": len(seeds),
        "n_candidates": int(len(y)),
        "n_positive": int(y.sum()),
        "label_rule": "greedy match to truth within max(0.5 mm, diameter) (napari_calc.core.evaluate)",
        "date": datetime.date.today().isoformat(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(model, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
