#!/usr/bin/env python
"""Train napari-calc's calibrated calcification and cluster scores.

Training uses generated phantoms ONLY, with seeds 1000-1999 (the accuracy
benchmark, ``benchmarks/accuracy.py``, uses seeds 0-19, never seen here).
Each training phantom draws its own spacing (0.05-0.2 mm, log-uniform, plus
the three benchmark spacings), density, difficulty, laterality and MC
morphology (round clusters only, or round and fine linear ones) from its
seed, so the model sees a broad range of acquisitions and calcifications
rather than the benchmark's exact settings.

Stage 1 (calcifications): the detector's candidates (``detect()`` with
``keep_min_score=0``) are labelled 1 when matched to a truth MC with the
evaluation rule of :mod:`napari_calc.core.evaluate` (distance <= max(0.5 mm,
diameter), one detection per MC, nearest pairs first), else 0. A
logistic regression on the standardised features of
:mod:`napari_calc.core.score` is fitted by penalised maximum likelihood
(L-BFGS-B, small L2 penalty), with the coefficients of the contrast-like
features (:data:`~napari_calc.core.score.MONOTONE_FEATURES`) bounded below
by 0 so that the score is monotonic in contrast.

Stage 2 (context): a piecewise-linear logistic model, non-decreasing in
both of its inputs, on the stage-1 calibrated log-odds and ``log_context``
(:func:`napari_calc.core.score.context_feature`: the summed stage-1
probabilities of the other candidates within the grouping radius), both
computed from OUT-OF-FOLD stage-1 predictions so that the training inputs
are as noisy as they will be on new images.

Stage 3 (clusters): with the final (stage-2) scores, the detector's clusters are
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
        # half the phantoms have fine linear (rod-like) clusters next to
        # round ones, so that elongation alone does not mark a candidate
        # as a vessel or duct (drawn last: the draws above are unchanged)
        mc_shapes=str(rng.choice(["round", "mixed"])),
    )


def candidates_of(seed: int, cache_dir: str | None = None):
    """Raw candidate measurements, labels and truth of training phantom ``seed``.

    With ``cache_dir``, the result is stored there (pickle) and reused:
    delete the cache whenever the detector's candidate stage changes.
    """
    import pickle

    if cache_dir:
        fn = os.path.join(cache_dir, f"train-{seed}.pkl")
        if os.path.exists(fn):
            with open(fn, "rb") as f:
                return pickle.load(f)
    from napari_calc.core.detect import detect
    from napari_calc.core.evaluate import match_calcifications
    from napari_calc.core.phantom import make_phantom

    cfg = phantom_config(seed)
    ph = make_phantom(seed=seed, **cfg)
    det = detect(ph.image, keep_min_score=0.0, n_threads=1)
    calcs = det.calcifications.reset_index(drop=True)
    raw = det.extra.reset_index(drop=True).copy()
    for k in ("diameter_mm", "contrast", "cnr", "y_mm", "x_mm"):
        raw[k] = calcs[k].to_numpy()
    out = dict(seed=seed, cfg=cfg, raw=raw, truth=ph.truth, n_truth=len(ph.truth["calcifications"]))
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = fn + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(out, f)
        os.replace(tmp, fn)
    return out


def labels(d):
    """1 for the candidate nearest to each truth MC within the evaluation's
    matching radius (max(0.5 mm, diameter), one-to-one, nearest pairs first),
    else 0 (duplicates and everything else)."""
    from napari_calc.core.evaluate import match_calcifications

    raw = d["raw"]
    t = d["truth"]["calcifications"]
    y = np.zeros(len(raw), dtype=np.int8)
    if len(raw) == 0 or not t:
        return y
    ty = np.array([c["y_mm"] for c in t])
    tx = np.array([c["x_mm"] for c in t])
    dist = np.hypot(raw["y_mm"].to_numpy(float)[:, None] - ty[None], raw["x_mm"].to_numpy(float)[:, None] - tx[None])
    # matching "by score" with score = -distance to the nearest MC: nearest pairs first
    calcs = raw[["y_mm", "x_mm"]].assign(score=-dist.min(axis=1)).reset_index(drop=True)
    m = match_calcifications(calcs, d["truth"])
    y[np.asarray(m["det_index"])[m["is_tp"]]] = 1
    return y


def _features(d):
    from napari_calc.core.score import candidate_feature_matrix

    return candidate_feature_matrix(d["raw"])


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


def choose_knots(X, y, n_knots=4, seed=0):
    """Knots per feature: quantiles (1/(n+1) .. n/(n+1)) of a sample holding all
    positives and as many random negatives."""
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    take = np.concatenate([pos, rng.choice(neg, size=min(len(neg), max(len(pos), 1)), replace=False)])
    qs = np.arange(1, n_knots + 1) / (n_knots + 1)
    knots = []
    for j in range(X.shape[1]):
        k = np.unique(np.round(np.quantile(X[take, j], qs), 6))
        knots.append(k.tolist())
    return knots


def pava(z, y):
    """Isotonic (non-decreasing) regression of y on z: block means and block z means."""
    o = np.argsort(z, kind="stable")
    z, y = np.asarray(z, float)[o], np.asarray(y, float)[o]
    vals, wts, zs = [], [], []
    for zi, yi in zip(z, y):  # training-time only
        vals.append(yi); wts.append(1.0); zs.append(zi)
        while len(vals) > 1 and vals[-2] >= vals[-1]:
            w = wts[-2] + wts[-1]
            v = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w
            zz = (zs[-2] * wts[-2] + zs[-1] * wts[-1]) / w
            vals[-2:], wts[-2:], zs[-2:] = [v], [w], [zz]
    return np.array(zs), np.array(vals), np.array(wts)


def calibration_map(z, y, max_knots=40, min_weight=30):
    """Monotone map from model log-odds to calibrated log-odds (isotonic regression
    on out-of-fold log-odds, blocks merged to at least ``min_weight`` samples)."""
    zs, vals, wts = pava(z, y)
    # merge small blocks (keeps monotonicity: a weighted mean of neighbours)
    Z, V, W = [], [], []
    for zz, v, w in zip(zs, vals, wts):
        if W and W[-1] < min_weight:
            t = W[-1] + w
            Z[-1] = (Z[-1] * W[-1] + zz * w) / t
            V[-1] = (V[-1] * W[-1] + v * w) / t
            W[-1] = t
        else:
            Z.append(zz); V.append(v); W.append(w)
    Z, V = np.array(Z), np.array(V)
    if len(Z) > max_knots:
        idx = np.unique(np.linspace(0, len(Z) - 1, max_knots).round().astype(int))
        Z, V = Z[idx], V[idx]
    V = np.clip(V, 1e-4, 1 - 1e-4)
    L = np.log(V / (1 - V))
    # strictly increasing knots for interp
    keep = np.concatenate([[True], (np.diff(Z) > 1e-9) & (np.diff(L) > 0)])
    return {"z": Z[keep].tolist(), "logit": L[keep].tolist()}


def fit_spline_model(X, y, groups_seed, *, monotone_idx, interactions, l2):
    """Additive piecewise-linear logistic model with monotone contrast features,
    plus a monotone calibration map fitted on 2-fold out-of-fold log-odds."""
    from napari_calc.core.score import basis_groups, ramp_basis

    knots = choose_knots(X, y)
    groups = basis_groups(knots, interactions)
    nonneg = [c for c, g in enumerate(groups) if g in monotone_idx]
    nonneg += list(range(len(groups) - len(interactions), len(groups)))
    B = ramp_basis(X, knots, interactions)
    fold = (np.asarray(groups_seed) // 8) % 2  # whole blocks of 8 seeds (every spacing in each)
    z_oof = np.zeros(len(y))
    for f in (0, 1):
        tr, te = fold != f, fold == f
        m = fit_logistic(B[tr], y[tr], nonneg=nonneg, l2=l2)
        z_oof[te] = ((B[te] - np.array(m["mean"])) / np.array(m["scale"])) @ np.array(m["coef"]) + m["intercept"]
    model = fit_logistic(B, y, nonneg=nonneg, l2=l2)
    model["knots"] = knots
    model["interactions"] = [list(t) for t in interactions]
    model["calibration"] = calibration_map(z_oof, y)
    return model, z_oof


def calibration_table(p, y, bins=10):
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for a, b in zip(edges[:-1], edges[1:]):
        m = (p >= a) & (p < b) if b < 1 else (p >= a)
        if m.sum():
            rows.append((a, b, int(m.sum()), float(p[m].mean()), float(y[m].mean())))
    return rows


def _positions(d):
    return np.column_stack([d["raw"]["y_mm"].to_numpy(float), d["raw"]["x_mm"].to_numpy(float)])


def cluster_rows(data, calc_model):
    """Cluster features and labels, with the final (context) scores, for every training phantom."""
    import pandas as pd

    from napari_calc.core.cluster import cluster_features, cluster_table
    from napari_calc.core.detect import DetectionParams, assign_clusters
    from napari_calc.core.evaluate import match_clusters
    from napari_calc.core.score import candidate_probability

    Xs, ys = [], []
    p = DetectionParams()
    for d in data:
        X = _features(d)
        prob = candidate_probability(X, _positions(d), calc_model) if len(X) else np.zeros(0)
        sp = d["cfg"]["spacing_mm"]
        ym, xm = d["raw"]["y_mm"].to_numpy(float), d["raw"]["x_mm"].to_numpy(float)
        calcs = pd.DataFrame({"row": ym / sp, "col": xm / sp, "y_mm": ym, "x_mm": xm,
                              "diameter_mm": d["raw"]["diameter_mm"].to_numpy(float), "score": prob,
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
    ap.add_argument("--cache", default=None,
                    help="directory to keep per-phantom candidates in (reused by later runs)")
    args = ap.parse_args(argv)
    a, b = args.seeds
    if not (TRAIN_SEEDS[0] <= a < b <= TRAIN_SEEDS[1]):
        ap.error(f"training seeds must lie in {TRAIN_SEEDS[0]}-{TRAIN_SEEDS[1] - 1} (0-999 are for benchmarks)")

    from napari_calc.core.score import (CLUSTER_FEATURE_NAMES, CONTEXT_FEATURE_NAMES, FEATURE_NAMES,
                                        MONOTONE_FEATURES)

    t0 = time.time()
    seeds = list(range(a, b))
    from functools import partial

    with ProcessPoolExecutor(args.workers) as ex:
        data = list(ex.map(partial(candidates_of, cache_dir=args.cache), seeds))
    X = np.vstack([_features(d) for d in data])
    for d in data:
        d["y"] = labels(d)
    y = np.concatenate([d["y"] for d in data])
    n_truth = sum(d["n_truth"] for d in data)
    print(f"{len(seeds)} phantoms, {len(y)} candidates, {int(y.sum())} matched of {n_truth} truth MCs "
          f"({time.time() - t0:.0f} s)")
    mono = [FEATURE_NAMES.index(f) for f in MONOTONE_FEATURES]
    seed_of = np.concatenate([np.full(len(d["y"]), d["seed"]) for d in data])
    inter = [(FEATURE_NAMES.index("log_blob_qsnr"), FEATURE_NAMES.index("eig_ratio")),
             (FEATURE_NAMES.index("log_ring_cnr"), FEATURE_NAMES.index("eig_ratio_2x"))]
    calc, z_oof = fit_spline_model(X, y, seed_of, monotone_idx=mono, interactions=inter, l2=args.l2)
    calc["features"] = list(FEATURE_NAMES)
    model = {"calcification": calc}
    from napari_calc.core.score import calc_probability

    pr = calc_probability(X, model)
    print("calcification model:", "converged" if calc["converged"] else "NOT converged")
    print("  calibration (bin, n, mean predicted, observed), in-sample:")
    for lo, hi, n, pm, po in calibration_table(pr, y):
        print(f"    [{lo:.1f},{hi:.1f}) {n:7d} {pm:.3f} {po:.3f}")

    from napari_calc.core.score import _sigmoid

    cal = calc["calibration"]
    p_oof = _sigmoid(np.interp(z_oof, cal["z"], cal["logit"]))
    print("  calibration, out-of-fold:")
    for lo, hi, n, pm, po in calibration_table(p_oof, y):
        print(f"    [{lo:.1f},{hi:.1f}) {n:7d} {pm:.3f} {po:.3f}")

    # stage 2: context from out-of-fold stage-1 probabilities
    from napari_calc.core.score import candidate_probability, context_feature

    from napari_calc.core.cluster import DEFAULT_CLUSTER_RADIUS_MM

    ctx, start = [], 0
    for d in data:
        n = len(d["y"])
        ctx.append(context_feature(_positions(d), p_oof[start:start + n], DEFAULT_CLUSTER_RADIUS_MM))
        start += n
    z1_oof = np.interp(z_oof, cal["z"], cal["logit"])  # calibrated out-of-fold stage-1 log-odds
    X2 = np.column_stack([z1_oof, np.concatenate(ctx)])
    context, z2_oof = fit_spline_model(X2, y, seed_of, monotone_idx=[0, 1], interactions=[], l2=args.l2)
    context["features"] = list(CONTEXT_FEATURE_NAMES)
    context["radius_mm"] = DEFAULT_CLUSTER_RADIUS_MM
    model["context"] = context
    print("context model:", "converged" if context["converged"] else "NOT converged")
    cal2 = context["calibration"]
    p2_oof = _sigmoid(np.interp(z2_oof, cal2["z"], cal2["logit"]))
    print("  calibration, out-of-fold:")
    for lo, hi, n, pm, po in calibration_table(p2_oof, y):
        print(f"    [{lo:.1f},{hi:.1f}) {n:7d} {pm:.3f} {po:.3f}")
    pf = np.concatenate([candidate_probability(_features(d), _positions(d), model) for d in data])
    for name, q in (("stage 1", pr), ("stage 2", pf)):
        order = np.argsort(-q, kind="stable")
        fp = np.cumsum(1 - y[order])
        tp = np.cumsum(y[order])
        k = np.searchsorted(fp, len(seeds), side="right")  # <= 1 FP per image, in-sample
        print(f"  {name}: {int(tp[k - 1]) if k else 0} of {n_truth} truth MCs at <= 1 FP/image (in-sample)")

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
        "label_rule": "one-to-one match to truth within max(0.5 mm, diameter), nearest first "
                      "(napari_calc.core.evaluate)",
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
