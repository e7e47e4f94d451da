#!/usr/bin/env python
"""Detection accuracy benchmark: FROC of napari-calc against generic blob detectors.

On fixed-seed phantoms (``napari_calc.core.phantom``; seeds 0-19 by
default, never used for training or tuning -- training uses 1000-1999, see
``scripts/train_classifier.py``) at pixel spacings 0.07, 0.1 and 0.2 mm,
this prints ONE table: sensitivity at 0.25, 0.5, 1 and 2 false positives
per image, for individual microcalcifications (MCs) and for clusters, for

* ``napari-calc``: :func:`napari_calc.detect` (calibrated score; clusters
  with their calibrated cluster score);
* ``skimage blob_log`` and ``skimage blob_dog`` (scikit-image), scales from
  the same 0.1-1.0 mm diameter range;
* ``OpenCV DoG``: one difference of Gaussians (``cv2.GaussianBlur``) tuned
  to a 0.3 mm MC (sigma at least 1 px), local maxima within 0.3 mm
  (``cv2.dilate``) above 3 robust noise units of the DoG.

The blob detectors use scales of at least 1 px (below, the sampled
Laplacian measures only pixel noise and floods them with peaks) and a
noise-adaptive threshold (3 robust standard deviations of the
scale-normalised LoG in the breast); at most 3000 candidates per image are
kept (the best by CNR).

Every method gets the same breast mask (napari-calc's
:func:`~napari_calc.core.mask.breast_mask` of the image; candidates outside
are dropped) and the baselines' candidates are scored by local
contrast-to-noise (contrast of the blob disc over a surrounding ring,
divided by the ring's standard deviation), so that their FROC can be swept.
Baseline clusters: the same clustering rule as napari-calc (DBSCAN, 3
calcifications within a 1 cm^2 disc) applied to the candidates above the
CNR threshold giving 1 FP/image for that method and spacing (chosen with
the truth, which favours the baselines), each cluster scored by the mean
CNR of its 3 best members.

Evaluation: :mod:`napari_calc.core.evaluate` (individual MCs matched within
max(0.5 mm, diameter); clusters when the detected centroid lies within the
truth cluster's radius + 2.5 mm), sensitivity at an FP rate = the best
operating point whose FP rate does not exceed it (no interpolation).

Usage::

    python benchmarks/accuracy.py [--n 20] [--first-seed 0] [--workers 2]
        [--spacings 0.07 0.1 0.2] [--methods all] [--markdown]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

FP_RATES = (0.25, 0.5, 1.0, 2.0)
METHODS = ("napari-calc", "skimage blob_log", "skimage blob_dog", "OpenCV DoG")
MIN_D, MAX_D = 0.1, 1.0  # mm, the same diameter range for every method
MAX_BASELINE_CANDIDATES = 3000


def bench_config(seed: int, mc_shapes: str = "round") -> dict:
    """The benchmark phantom of ``seed``: default generator settings
    ("normal" difficulty, 2 clusters, 6 single MCs, vessels, ducts and benign
    calcifications), with the density and laterality varying by seed.
    ``mc_shapes`` (``--mc-shapes``): the MC morphology; the targets are
    judged on the default, "round"."""
    return dict(density=(0.2, 0.4, 0.6, 0.8)[seed % 4], laterality="LR"[seed % 2], mc_shapes=mc_shapes)


def _cnr_score(img, rr, cc, radius_px):
    """Local contrast-to-noise of candidates (C kernel): (mean of the blob
    disc - mean of a ring) / standard deviation of the ring."""
    from napari_calc import _kernel
    from napari_calc.core.detect import _kernel_input

    if len(rr) == 0:
        return np.zeros(0)
    f = _kernel.candidate_features(_kernel_input(img), np.ascontiguousarray(rr, np.int32),
                                   np.ascontiguousarray(cc, np.int32),
                                   np.ascontiguousarray(np.maximum(radius_px, 0.5), np.float32), 1)
    contrast, bg_std = f[0].astype(float), f[1].astype(float)
    return np.where(bg_std > 0, contrast / np.maximum(bg_std, 1e-9), 0.0)


def _table(rr, cc, score, sp):
    return pd.DataFrame({"row": rr, "col": cc, "y_mm": np.asarray(rr, float) * sp,
                         "x_mm": np.asarray(cc, float) * sp, "score": score})


def _in_mask(rr, cc, mask):
    rr = np.clip(np.asarray(rr).round().astype(int), 0, mask.shape[0] - 1)
    cc = np.clip(np.asarray(cc).round().astype(int), 0, mask.shape[1] - 1)
    return rr, cc, mask[rr, cc]


def _cap(rr, cc, score):
    """Keep the MAX_BASELINE_CANDIDATES best-scoring candidates."""
    if len(rr) > MAX_BASELINE_CANDIDATES:
        k = np.sort(np.argsort(-score, kind="stable")[:MAX_BASELINE_CANDIDATES])
        return rr[k], cc[k], score[k]
    return rr, cc, score


def _noise_units(img, mask):
    """The image divided by its robust pixel noise (so thresholds are in noise units)."""
    from napari_calc.core.score import noise_level_function

    _, sd = noise_level_function(img, mask)
    return img.astype(np.float32) / np.float32(np.median(sd))


def _scale_range(sp):
    """Gaussian scales (px) for the 0.1-1.0 mm diameter range, at least 1 px
    (below that the sampled Laplacian only measures pixel noise)."""
    smin = max(MIN_D / (2 * math.sqrt(2)) / sp, 1.0)
    smax = max(MAX_D / (2 * math.sqrt(2)) / sp, 1.6 * smin)
    return smin, smax


def _log_threshold(x, mask, smin, smax, k=3.0):
    """k times the robust spread of the scale-normalised LoG response in the
    breast, at the smallest scale: a noise-adaptive absolute threshold."""
    from scipy import ndimage as ndi

    s = smin
    L = -(s * s) * ndi.gaussian_laplace(x, s)
    v = L[mask]
    return k * 1.4826 * float(np.median(np.abs(v - np.median(v))))


def run_blob_log(img, mask, sp):
    from skimage.feature import blob_log

    x = _noise_units(img, mask)
    smin, smax = _scale_range(sp)
    thr = _log_threshold(x, mask, smin, smax)
    blobs = blob_log(x, min_sigma=smin, max_sigma=smax, num_sigma=6, threshold=thr, overlap=0.5)
    rr, cc, ok = _in_mask(blobs[:, 0], blobs[:, 1], mask)
    rad = blobs[:, 2] * math.sqrt(2)
    rr, cc, rad = rr[ok], cc[ok], rad[ok]
    sc = _cnr_score(img, rr, cc, rad)
    rr, cc, sc = _cap(rr, cc, sc)
    return _table(rr, cc, sc, sp)


def run_blob_dog(img, mask, sp):
    from skimage.feature import blob_dog

    x = _noise_units(img, mask)
    smin, smax = _scale_range(sp)
    # blob_dog's response is a DoG ~ (k - 1) sigma^2 LoG: scale the threshold alike
    thr = 0.6 * _log_threshold(x, mask, smin, smax)
    blobs = blob_dog(x, min_sigma=smin, max_sigma=smax, sigma_ratio=1.6, threshold=thr, overlap=0.5)
    rr, cc, ok = _in_mask(blobs[:, 0], blobs[:, 1], mask)
    rad = blobs[:, 2] * math.sqrt(2)
    rr, cc, rad = rr[ok], cc[ok], rad[ok]
    sc = _cnr_score(img, rr, cc, rad)
    rr, cc, sc = _cap(rr, cc, sc)
    return _table(rr, cc, sc, sp)


def run_cv_dog(img, mask, sp):
    import cv2

    x = img.astype(np.float32)
    s1 = max(0.3 / (2 * math.sqrt(2)) / sp, 1.0)
    s2 = 1.6 * s1
    dog = cv2.GaussianBlur(x, (0, 0), s1, borderType=cv2.BORDER_REFLECT) - \
        cv2.GaussianBlur(x, (0, 0), s2, borderType=cv2.BORDER_REFLECT)
    vals = dog[mask]
    noise = 1.4826 * float(np.median(np.abs(vals - np.median(vals)))) or 1.0
    r = max(1, int(round(0.3 / sp)))
    dil = cv2.dilate(dog, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    peaks = (dog >= dil) & (dog > 3.0 * noise) & mask
    rr, cc = np.nonzero(peaks)
    strength = dog[rr, cc]
    rad = np.full(len(rr), s1 * math.sqrt(2))
    rr, cc, sc = _cap(rr, cc, _cnr_score(img, rr, cc, rad))
    return _table(rr, cc, sc, sp)


def run_one(job):
    """All methods on one phantom: (seed, spacing, {method: (calcs, clusters or None)}, truth, seconds)."""
    seed, sp, methods, mc_shapes = job
    from napari_calc.core.detect import detect
    from napari_calc.core.mask import breast_mask
    from napari_calc.core.phantom import make_phantom

    ph = make_phantom(seed=seed, spacing_mm=sp, **bench_config(seed, mc_shapes))
    img = ph.image.pixels
    mask = breast_mask(img, (sp, sp))
    out, secs = {}, {}
    for m in methods:
        t = time.perf_counter()
        if m == "napari-calc":
            det = detect(ph.image, mask=mask, keep_min_score=0.0, n_threads=1)
            out[m] = (det.calcifications, det.clusters)
        elif m == "skimage blob_log":
            out[m] = (run_blob_log(img, mask, sp), None)
        elif m == "skimage blob_dog":
            out[m] = (run_blob_dog(img, mask, sp), None)
        elif m == "OpenCV DoG":
            out[m] = (run_cv_dog(img, mask, sp), None)
        secs[m] = time.perf_counter() - t
    return seed, sp, out, ph.truth, secs


def baseline_clusters(calc_tables, truths, sp):
    """Clusters for a baseline: DBSCAN (napari-calc's rule) of the candidates
    above the CNR threshold giving <= 1 FP/image."""
    from napari_calc.core.cluster import DEFAULT_CLUSTER_RADIUS_MM, cluster_calcifications
    from napari_calc.core.evaluate import froc

    f = froc(calc_tables, truths)
    ok = f["fp_per_image"].to_numpy() <= 1.0
    thr = float(f["threshold"][ok].iloc[-1]) if ok.any() else math.inf
    res = []
    for t in calc_tables:
        sel = t[t["score"] >= thr]
        lab = cluster_calcifications(sel[["y_mm", "x_mm"]].to_numpy(float), radius_mm=DEFAULT_CLUSTER_RADIUS_MM,
                                     min_size=3)
        rows = []
        for cid in np.unique(lab[lab >= 0]):
            g = sel[lab == cid]
            rows.append({"y_mm": g["y_mm"].mean(), "x_mm": g["x_mm"].mean(), "n_calcifications": len(g),
                         "score": float(np.sort(g["score"].to_numpy())[::-1][:3].mean())})
        res.append(pd.DataFrame(rows, columns=["y_mm", "x_mm", "n_calcifications", "score"]))
    return res


CNR_BANDS = ((0.0, 2.0), (2.0, 4.0), (4.0, math.inf))
CNR_BANDS_TXT = ("< 2", "2-4", ">= 4")


def _cnr_strata(results, spacings, methods):
    """Sensitivity at the 1 FP/image operating point per truth-CNR band."""
    from napari_calc.core.evaluate import froc, froc_summary, match_calcifications

    out = []
    for sp in spacings:
        res = [r for r in results if r[1] == sp]
        truths = [r[3] for r in res]
        for m in methods:
            calcs = [r[2][m][0] for r in res]
            thr = float(froc_summary(froc(calcs, truths), rates=(1.0,))["threshold"].iloc[0])
            det, cnr = [], []
            for c, t in zip(calcs, truths):
                mm = match_calcifications(c, t)
                det.append(mm["truth_best_score"] >= thr)
                cnr.append(np.array([x["cnr"] for x in t["calcifications"]], float))
            det, cnr = np.concatenate(det), np.concatenate(cnr)
            vals = []
            for lo, hi in CNR_BANDS:
                sel = (cnr >= lo) & (cnr < hi)
                vals.append((float(det[sel].mean()) if sel.any() else float("nan"), int(sel.sum())))
            out.append((sp, m, vals))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="FROC benchmark of napari-calc vs generic blob detectors")
    ap.add_argument("--n", type=int, default=20, help="phantoms per spacing (default 20)")
    ap.add_argument("--first-seed", type=int, default=0, help="first seed (default 0; keep < 1000)")
    ap.add_argument("--spacings", type=float, nargs="+", default=[0.07, 0.1, 0.2])
    ap.add_argument("--methods", nargs="+", default=["all"],
                    help="subset of: napari-calc blob_log blob_dog cv_dog (default all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mc-shapes", choices=("round", "linear", "mixed"), default="round",
                    help="MC morphology of the phantoms (default round, the benchmark's; "
                         "'linear': fine linear clusters and singles, a robustness check)")
    args = ap.parse_args(argv)
    if args.first_seed + args.n > 1000:
        ap.error("benchmark seeds must stay below 1000 (1000-1999 are training seeds)")
    alias = {"napari-calc": "napari-calc", "blob_log": "skimage blob_log", "blob_dog": "skimage blob_dog",
             "cv_dog": "OpenCV DoG"}
    methods = list(METHODS) if "all" in args.methods else [alias[m] for m in args.methods]

    from napari_calc.core.evaluate import cluster_froc, froc, sensitivity_at

    t0 = time.time()
    jobs = [(s, sp, methods, args.mc_shapes) for sp in args.spacings
            for s in range(args.first_seed, args.first_seed + args.n)]
    with ProcessPoolExecutor(args.workers) as ex:
        results = list(ex.map(run_one, jobs))
    rows = []
    for sp in args.spacings:
        res = [r for r in results if r[1] == sp]
        truths = [r[3] for r in res]
        n_mc = sum(len(t["calcifications"]) for t in truths)
        n_cl = sum(len(t["clusters"]) for t in truths)
        for m in methods:
            calcs = [r[2][m][0] for r in res]
            f = froc(calcs, truths)
            if m == "napari-calc":
                clus = [r[2][m][1] for r in res]
            else:
                clus = baseline_clusters(calcs, truths, sp)
            fc = cluster_froc(clus, truths)
            row = {"spacing_mm": sp, "method": m}
            for r in FP_RATES:
                row[f"MC@{r:g}"] = sensitivity_at(f, r)
            for r in FP_RATES:
                row[f"cluster@{r:g}"] = sensitivity_at(fc, r)
            row["s/image"] = float(np.mean([x[4][m] for x in res]))
            row["n_MC"], row["n_clusters"] = n_mc, n_cl
            rows.append(row)
    table = pd.DataFrame(rows)
    strata = _cnr_strata(results, args.spacings, methods)
    print(f"# napari-calc accuracy benchmark: {args.n} phantoms per spacing, seeds "
          f"{args.first_seed}-{args.first_seed + args.n - 1}, {len(jobs)} images, {time.time() - t0:.0f} s"
          + ("" if args.mc_shapes == "round" else f", MC shapes: {args.mc_shapes}"))
    print(f"# machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}")
    print("# sensitivity at FP/image (individual MCs) and at false clusters/image (clusters)")
    cols = ["spacing_mm", "method"] + [f"MC@{r:g}" for r in FP_RATES] + [f"cluster@{r:g}" for r in FP_RATES] + \
        ["s/image", "n_MC", "n_clusters"]
    fmt = table[cols].copy()
    for c in cols[2:-3]:
        fmt[c] = fmt[c].map(lambda v: f"{v:.3f}")
    fmt["s/image"] = fmt["s/image"].map(lambda v: f"{v:.2f}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for _, r in fmt.iterrows():
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print()
    print("# sensitivity at 1 FP/image by the truth MC's CNR (peak contrast / pixel noise sd, from the generator)")
    print("| spacing_mm | method | " + " | ".join(f"CNR {b}" for b in CNR_BANDS_TXT) + " |")
    print("|" + "---|" * (2 + len(CNR_BANDS_TXT)))
    for r in strata:
        print(f"| {r[0]} | {r[1]} | " + " | ".join(f"{v:.3f} (n={n})" for v, n in r[2]) + " |")
    ok = True
    for sp in args.spacings:
        r = table[(table.spacing_mm == sp) & (table.method == "napari-calc")]
        if len(r):
            r = r.iloc[0]
            mc_ok, cl_ok = r["MC@1"] >= 0.90, r["cluster@0.25"] >= 0.95
            ok &= mc_ok and cl_ok
            print(f"# targets at {sp} mm: MC sensitivity@1 FP/image {r['MC@1']:.3f} "
                  f"({'met' if mc_ok else 'NOT met'}, >= 0.90); cluster sensitivity@0.25 FC/image "
                  f"{r['cluster@0.25']:.3f} ({'met' if cl_ok else 'NOT met'}, >= 0.95)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
