#!/usr/bin/env python
"""An upper bound on MC sensitivity at 1 FP/image: the ideal observer.

How many of the benchmark's microcalcifications could *any* detector find
at 1 false positive per image? This computes an optimistic answer on the
same phantoms as ``benchmarks/accuracy.py`` (seeds 0-19, "round" MCs, at
0.07, 0.1 and 0.2 mm), for an observer that is given far more than a real
detector has:

* **each MC's exact noise-free signal**: the generator's own difference
  image with and without that MC (attenuation, pixel aperture, scatter
  and PSF, in ``-ln(exposure)`` units), as for the truth ``contrast``;
* **the background known exactly**: no anatomy, vessels, ducts or benign
  calcifications get in its way; only the detector's white quantum and
  electronic noise (standard deviation ``sqrt(E + e^2) / E`` at exposure
  ``E``, as the generator adds it; Gaussian, which the generator is);
* **its own template for each MC**: the prewhitened matched filter
  ``w = s / sd`` of that MC alone, whose output at the MC has mean
  ``d' = ||w||`` and unit noise.

It must still *search*: the MC's position is unknown, so it marks the
peaks of its matched-filter field that exceed a threshold ``t``, chosen so
that pure noise over the breast gives on average 1 false mark per image.
That threshold comes from the expected Euler characteristic of the
excursion set of a smooth Gaussian field (Adler; Worsley et al. 1996),

    E[#FP] ~ A sqrt(det L) / (2 pi)^(3/2) t exp(-t^2 / 2) + (1 - Phi(t)),

with ``A`` the breast area (pixels) and ``L`` the covariance of the
field's gradient (from the template's autocorrelation), which counts the
connected blobs of the noise field above ``t``: a lower bound on the marks
any peak-marking detector makes, so the threshold is low (optimistic). The
script checks it against simulated noise fields for a few templates.

An MC counts as found when the observer's field exceeds ``t`` somewhere in
its matching disc (``max(0.5 mm, diameter)``, as ``napari-calc evaluate``
matches): the probability is estimated from noise draws for each MC.
The bound is the mean of those probabilities over all truth MCs.

A second figure tells the observer also where the truth clusters are: it
may split its false-positive budget between the clusters' discs and the
rest of the breast, as suits each image best (a lower threshold where MCs
are known to be grouped). No detector knows that; it bounds detectors
that exploit grouping (such as napari-calc's context stage).

Every simplification favours the observer (no anatomy; a threshold per
template, as if it knew which MC to expect; the FP count of blobs, not of
marks), so a real detector on these images cannot exceed the bound, up to
the Monte-Carlo and Euler-characteristic approximations (printed).

Usage::

    python benchmarks/ideal_observer.py [--n 20] [--spacings 0.07 0.1 0.2] [--draws 400]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
from scipy import ndimage as ndi
from scipy import signal
from scipy.optimize import brentq
from scipy.special import ndtr

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from accuracy import bench_config  # noqa: E402  (the benchmark's phantoms)

from napari_calc.core import phantom as ph_mod  # noqa: E402
from napari_calc.core.mask import breast_mask  # noqa: E402

MIN_MATCH_MM = 0.5  # napari_calc.core.evaluate: radius max(0.5 mm, diameter)


def mc_templates(seed: int, spacing: float) -> tuple[list[dict], object]:
    """The benchmark phantom of ``seed`` at ``spacing`` and, for each truth
    MC (in truth order), a dict of its noise-free signal ``s`` (a patch, in
    ``-ln(exposure)`` units), the same prewhitened ``w`` (noise sd 1), its
    centre ``row``, ``col`` in patch pixels and its truth ``diameter_mm``,
    ``cnr`` and ``contrast_log``.

    Wraps the generator's acquisition step to see the same attenuation map,
    scatter and PSF it uses for the truth contrast."""
    got = []
    orig = ph_mod._acquire

    def acquire(scene, L, focus, **kw):
        out = orig(scene, L, focus, **kw)
        sp = scene.spacing
        n_q = kw["quanta_per_mm2"] * sp * sp
        sigma = scene.acq["psf_sigma_px"]
        e2 = float(kw["electronic_noise"]) ** 2
        S = kw.get("S")
        if S is None:
            S = ph_mod._blur_scatter((n_q * np.exp(-L)).astype(np.float32), scene)
        for i, y0, x0, patch, _area in focus:
            h, w = patch.shape
            lp = ph_mod._get_patch(L, y0, x0, h, w).astype(np.float64)
            sp_ = ph_mod._get_patch(S, y0, x0, h, w).astype(np.float64)
            e_with = ndi.gaussian_filter(n_q * np.exp(-lp) + sp_, sigma, mode="nearest")
            e_without = ndi.gaussian_filter(n_q * np.exp(-(lp - patch)) + sp_, sigma, mode="nearest")
            s = np.log(e_without) - np.log(e_with)  # -ln units, as the output (times its gain)
            sd = np.sqrt(e_with + e2) / e_with       # noise sd in the same units
            mc = scene.mcs[i]  # centre in patch pixels (before any left-right flip of the output)
            got.append({"index": i, "s": s, "w": s / sd, "row": mc.y / sp - y0, "col": mc.x / sp - x0})
        return out

    ph_mod._acquire = acquire
    try:
        ph = ph_mod.make_phantom(seed=seed, spacing_mm=spacing, **bench_config(seed))
    finally:
        ph_mod._acquire = orig
    by_index = {g["index"]: g for g in got}
    mcs = []
    for rec in ph.truth["calcifications"]:
        g = by_index[rec["calc_id"]]
        mcs.append({"s": g["s"], "w": g["w"], "row": g["row"], "col": g["col"],
                    "diameter_mm": rec["diameter_mm"], "cnr": rec["cnr"], "contrast_log": rec["contrast_log"]})
    return mcs, ph


#: Threshold at which the number of noise blobs is counted to calibrate
#: the Euler-characteristic curve (many blobs, mostly one peak each).
T_CAL = 4.0


def blob_rate(w: np.ndarray, t: float, rng, side: int = 1024, reps: int = 1) -> float:
    """Connected blobs above ``t`` per pixel of white noise filtered by the
    normalised ``w`` (a unit-variance field), from ``reps`` ``side`` x
    ``side`` fields."""
    wn = w / np.linalg.norm(w)
    blobs = area = 0
    for _ in range(reps):
        f = signal.fftconvolve(rng.standard_normal((side, side)), wn[::-1, ::-1], mode="valid")
        blobs += ndi.label(f > t)[1]
        area += f.size
    return blobs / area


def ec_shape(t: float) -> float:
    """The threshold dependence of a 2-D Gaussian field's expected Euler
    characteristic per unit area, ``t exp(-t^2 / 2)``."""
    return t * math.exp(-t * t / 2)


def threshold_1fp(rate_cal: float, area_px: float, fp: float = 1.0) -> float:
    """Threshold giving ``fp`` expected false blobs on ``area_px`` pixels,
    from the blob rate measured at :data:`T_CAL` (the Euler-characteristic
    curve through that point), plus the global term ``1 - Phi(t)``."""
    c = rate_cal / ec_shape(T_CAL)
    return brentq(lambda t: area_px * c * ec_shape(t) + (1 - ndtr(t)) - fp, T_CAL - 2, 12.0)


def simulated_fp(w: np.ndarray, t: float, area_px: float, rng, side: int = 1024, reps: int = 32) -> float:
    """False blobs per image of ``area_px`` at threshold ``t``, counted on
    ``reps`` simulated noise fields (the check of :func:`threshold_1fp`)."""
    return blob_rate(w, t, rng, side, reps) * area_px


def peak_samples(mc: dict, spacing: float, rng, draws: int) -> np.ndarray:
    """``draws`` samples of the maximum of the matched-filter field of
    ``mc`` over the MC's matching disc; the MC is found at threshold ``t``
    with probability ``mean(samples > t)``."""
    w = mc["w"]
    d = float(np.linalg.norm(w))
    wn = w / d
    h, wd = w.shape
    mean = signal.correlate(w, wn, mode="same")  # the noise-free field, peak d' at the MC
    radius = max(MIN_MATCH_MM, mc["diameter_mm"]) / spacing
    yy, xx = np.mgrid[0:h, 0:wd]
    disc = (yy - mc["row"]) ** 2 + (xx - mc["col"]) ** 2 <= radius * radius
    if not disc.any():
        disc[int(round(mc["row"])), int(round(mc["col"]))] = True
    out = []
    for _ in range(-(-draws // 50)):
        z = rng.standard_normal((50, h + h - 1, wd + wd - 1))
        nz = signal.fftconvolve(z, wn[None, ::-1, ::-1], mode="valid", axes=(1, 2))
        out.append((mean[None] + nz)[:, disc].max(axis=1))
    return np.concatenate(out)[:draws]


def cluster_region_px(ph, spacing: float, mask: np.ndarray) -> float:
    """Pixels of the breast within the truth clusters' discs (centroid,
    radius: farthest member + the 0.5 mm matching radius)."""
    calcs = ph.truth["calcifications"]
    region = np.zeros(mask.shape, bool)
    yy, xx = np.ogrid[0:mask.shape[0], 0:mask.shape[1]]
    for cl in ph.truth["clusters"]:
        mem = [c for c in calcs if c["cluster_id"] == cl["cluster_id"]]
        r_mm = max(math.hypot(c["y_mm"] - cl["y_mm"], c["x_mm"] - cl["x_mm"]) for c in mem) + MIN_MATCH_MM
        region |= (yy - cl["y_mm"] / spacing) ** 2 + (xx - cl["x_mm"] / spacing) ** 2 <= (r_mm / spacing) ** 2
    return float(np.count_nonzero(region & mask))


def oracle_found(peaks, rates, in_cluster, area: float, area_c: float, fp: float = 1.0) -> float:
    """Expected MCs found in one image by an observer told where the
    clusters are: it splits its ``fp`` false blobs between the cluster
    regions (``area_c`` pixels) and the rest of the breast, the split that
    finds the most (searched on a grid), each MC at its own template's
    threshold for its region."""
    best = 0.0
    for f in np.linspace(0.0, 1.0, 41):
        fp_c, fp_r = f * fp, (1 - f) * fp
        tot = 0.0
        for pk, rate, inc in zip(peaks, rates, in_cluster):
            a, b = (area_c, fp_c) if inc else (area - area_c, fp_r)
            t = threshold_1fp(rate, a, fp=b) if b > 0 and a > 0 else np.inf
            tot += float(np.mean(pk > t))
        best = max(best, tot)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20, help="phantoms per spacing (seeds 0..n-1)")
    ap.add_argument("--spacings", type=float, nargs="+", default=(0.07, 0.1, 0.2))
    ap.add_argument("--draws", type=int, default=400, help="noise draws per MC")
    ap.add_argument("--check", type=int, default=3, help="templates per spacing checked by simulation")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(20261204)
    t0 = time.time()
    rows = []
    for sp in args.spacings:
        probs, cnrs, dps, ts, checks, oracle = [], [], [], [], [], 0.0
        for seed in range(args.n):
            mcs, ph = mc_templates(seed, sp)
            mask = breast_mask(ph.image.pixels, sp)
            area = float(np.count_nonzero(mask))
            peaks, rates = [], []
            for mc in mcs:
                rate = blob_rate(mc["w"], T_CAL, rng, reps=8)
                pk = peak_samples(mc, sp, rng, args.draws)
                t = threshold_1fp(rate, area)
                probs.append([np.mean(pk > t), np.mean(pk > threshold_1fp(rate, area, fp=2.0))])
                cnrs.append(mc["cnr"])
                dps.append(float(np.linalg.norm(mc["w"])))
                ts.append(t)
                peaks.append(pk)
                rates.append(rate)
                if len(checks) < args.check and seed == 0:
                    checks.append((mc["diameter_mm"], t, simulated_fp(mc["w"], t, area, rng)))
            in_cluster = [c["cluster_id"] >= 0 for c in ph.truth["calcifications"]]
            oracle += oracle_found(peaks, rates, in_cluster, area, cluster_region_px(ph, sp, mask))
        probs, cnrs, dps, ts = map(np.asarray, (probs, cnrs, dps, ts))  # probs: (MC, [1 FP, 2 FP])
        rows.append((sp, probs, cnrs, dps, ts, checks, oracle / len(probs)))
    print(f"# ideal-observer bound on MC sensitivity at 1 FP/image: benchmark phantoms, seeds 0-{args.n - 1}, "
          f"{args.draws} noise draws per MC, {time.time() - t0:.0f} s")
    print("| spacing_mm | truth MCs | bound at 1 FP/image | CNR < 2 | CNR 2-4 | CNR >= 4 | bound at 2 FP/image "
          "| told the clusters, 1 FP/image | median d' | median t (1 FP) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for sp, probs, cnrs, dps, ts, _, oracle in rows:
        parts = []
        for lo, hi in ((-np.inf, 2), (2, 4), (4, np.inf)):
            m = (cnrs >= lo) & (cnrs < hi)
            parts.append(f"{probs[m, 0].mean():.3f} (n={m.sum()})" if m.any() else "-")
        print(f"| {sp:g} | {len(probs)} | **{probs[:, 0].mean():.3f}** | {' | '.join(parts)} | "
              f"{probs[:, 1].mean():.3f} | {oracle:.3f} | {np.median(dps):.2f} | {np.median(ts):.2f} |")
    print("\n# check of the threshold: false blobs per image at t, counted on 32 simulated noise fields "
          "of 1024x1024 (the aim is 1)")
    print("| spacing_mm | MC diameter mm | t | blobs/image |")
    print("|---|---|---|---|")
    for sp, *_, checks, _ in rows:
        for dmm, t, blobs in checks:
            print(f"| {sp:g} | {dmm:.2f} | {t:.2f} | {blobs:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
