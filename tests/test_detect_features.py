"""The per-candidate C measurements and the scoring model's ingredients."""

import json
import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_calc import _kernel
from napari_calc.core.score import (CLUSTER_FEATURE_NAMES, FEATURE_NAMES, MONOTONE_FEATURES, calc_probability,
                                    load_model, noise_level_function)


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_local_hessian_matches_scipy(dtype):
    rng = np.random.default_rng(0)
    im = ndi.gaussian_filter(rng.normal(size=(50, 64)) * 400 + 3000, 1.5).astype(dtype)
    rows = np.array([0, 10, 25, 49, 30], np.int32)
    cols = np.array([0, 63, 30, 5, 12], np.int32)
    sig = np.array([1.0, 2.5, 3.0, 1.5, 6.0], np.float32)
    out = _kernel.local_hessian(im, rows, cols, sig, 4.0, 1)
    ref_im = im.astype(np.float64)
    for i in range(len(rows)):
        g = ndi.gaussian_filter(ref_im, float(sig[i]), truncate=4.0, mode="reflect")[rows[i], cols[i]]
        assert abs(out[0, i] - g) <= 1e-4 * abs(g)
        # derivatives are defined on (img - g): exactly 0 for a constant image
        for k, order in enumerate([(2, 0), (1, 1), (0, 2)], start=1):
            ref = ndi.gaussian_filter(ref_im - g, float(sig[i]), order=order, truncate=4.0, mode="reflect")
            val = ref[rows[i], cols[i]]
            scale = np.abs(ref).max()
            assert abs(out[k, i] - val) <= 1e-4 * scale + 1e-6, (i, order, out[k, i], val)


def test_local_hessian_blob_and_line():
    yy, xx = np.mgrid[0:41, 0:41].astype(np.float64)
    blob = np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / (2 * 2.0 ** 2)).astype(np.float32)
    line = np.exp(-((xx - 20) ** 2) / (2 * 2.0 ** 2)).astype(np.float32)
    r = np.array([20], np.int32)
    s = np.array([2.0], np.float32)
    hb = _kernel.local_hessian(blob, r, r, s)[:, 0]
    hl = _kernel.local_hessian(line, r, r, s)[:, 0]
    assert hb[1] < 0 and hb[3] < 0 and abs(hb[1] - hb[3]) < 1e-6 and abs(hb[2]) < 1e-6
    assert hl[3] < 0 and abs(hl[1]) < 1e-3 * abs(hl[3])  # flat along the line
    with pytest.raises(ValueError):
        _kernel.local_hessian(blob, r, r, np.array([0.0], np.float32))


def test_noise_level_function_follows_signal_dependent_noise():
    rng = np.random.default_rng(5)
    h, w = 400, 300
    level = np.linspace(1000, 4000, w)[None, :].repeat(h, axis=0)
    sd_true = 0.5 * np.sqrt(level)  # quantum-like: variance grows with the signal
    img = (level + rng.standard_normal((h, w)) * sd_true).astype(np.float32)
    lev, sd = noise_level_function(img)
    for L in (1500.0, 2500.0, 3500.0):
        est = float(np.interp(L, lev, sd))
        assert abs(est / (0.5 * math.sqrt(L)) - 1) < 0.1, (L, est)


def test_shipped_model_is_consistent():
    model = load_model()
    part = model["calcification"]
    assert part["features"] == list(FEATURE_NAMES)
    for name in MONOTONE_FEATURES:
        assert part["coef"][FEATURE_NAMES.index(name)] >= 0
    assert model["cluster"]["features"] == list(CLUSTER_FEATURE_NAMES)
    assert all(c >= 0 for c in model["cluster"]["coef"])
    assert 1000 <= model["training"]["seeds"][0] < model["training"]["seeds"][1] <= 2000
    X = np.zeros((3, len(FEATURE_NAMES)))
    p = calc_probability(X, model)
    assert np.all((p >= 0) & (p <= 1))
    json.dumps(model)  # plain JSON


def test_context_feature_sums_the_other_candidates_within_the_radius():
    from napari_calc.core.score import context_feature

    pos = np.array([[0.0, 0.0], [0.0, 3.0], [4.0, 0.0], [0.0, 20.0]])
    prob = np.array([0.9, 0.5, 0.25, 0.8])
    got = context_feature(pos, prob, radius_mm=5.0)
    # 0 sees 1 and 2; 1 sees 0 and 2 (distance 5.0: inclusive); 2 sees 0 and 1; 3 alone
    want = np.log1p([0.5 + 0.25, 0.9 + 0.25, 0.9 + 0.5, 0.0])
    np.testing.assert_allclose(got, want)
    assert context_feature(np.zeros((0, 2)), np.zeros(0)).shape == (0,)
    assert context_feature(pos[:1], prob[:1])[0] == 0.0  # itself never counts


def test_likely_neighbours_never_lower_a_score():
    from napari_calc.core.score import CONTEXT_FEATURE_NAMES, candidate_probability

    model = load_model()
    assert model["context"]["features"] == list(CONTEXT_FEATURE_NAMES)
    rng = np.random.default_rng(0)
    # a candidate of middling features, alone or with 1..4 neighbours of rising strength
    base = np.median(rng.normal(size=(50, len(FEATURE_NAMES))), axis=0)
    strong = base + 2.0
    prev = -1.0
    for k in range(5):
        X = np.vstack([base] + [strong] * k)
        pos = np.array([[0.0, 0.0]] + [[1.0 + i, 0.0] for i in range(k)])
        p = candidate_probability(X, pos, model)[0]
        assert p >= prev - 1e-12, (k, p, prev)
        prev = p
    # far neighbours do not count
    X = np.vstack([base, strong])
    alone = candidate_probability(X[:1], np.zeros((1, 2)), model)[0]
    far = candidate_probability(X, np.array([[0.0, 0.0], [50.0, 0.0]]), model)[0]
    assert far == pytest.approx(alone)


@pytest.mark.parametrize("n,k", [(10, 3), (1000, 999), (5, 5), (7, 10), (20000, 3000)])
def test_top_k_selects_as_a_stable_sort_would(n, k):
    import sys

    top_k = sys.modules["napari_calc.core.detect"]._top_k
    rng = np.random.default_rng(n)
    for vals in (rng.normal(size=n), rng.integers(0, 5, size=n).astype(float)):  # ties at the cut
        want = np.sort(np.argsort(-vals, kind="stable")[:k])
        np.testing.assert_array_equal(top_k(vals, k), want)


def test_noise_level_function_pools_the_planes_of_a_stack():
    rng = np.random.default_rng(6)
    h, w = 200, 300
    level = np.linspace(1000, 4000, w)[None, :].repeat(h, axis=0)
    stack = (level + rng.standard_normal((4, h, w)) * 0.5 * np.sqrt(level)).astype(np.float32)
    lev, sd = noise_level_function(stack)
    for L in (1500.0, 2500.0, 3500.0):
        assert abs(float(np.interp(L, lev, sd)) / (0.5 * math.sqrt(L)) - 1) < 0.1
    one = noise_level_function(stack[:1])
    ref = noise_level_function(stack[0])
    np.testing.assert_array_equal(one[0], ref[0])
    np.testing.assert_array_equal(one[1], ref[1])
    with pytest.raises(ValueError):
        noise_level_function(np.zeros(10))


def test_cluster_features_match_a_per_cluster_loop():
    import pandas as pd

    from napari_calc.core.cluster import cluster_features
    from napari_calc.core.score import logit

    rng = np.random.default_rng(0)
    for t in range(100):
        n = int(rng.integers(0, 60))
        calcs = pd.DataFrame({"cluster_id": rng.integers(-1, 6, n), "score": rng.random(n)})
        if t % 7 == 0 and n:
            calcs.loc[0, "score"] = np.nan  # counts as 0
        ids, X = cluster_features(calcs)
        want_ids = sorted(set(calcs["cluster_id"]) - {-1})
        assert list(ids) == want_ids
        for k, cid in enumerate(want_ids):
            s = np.clip(calcs.loc[calcs["cluster_id"] == cid, "score"].fillna(0.0).to_numpy(), 0, 1)
            best3 = np.sort(s)[::-1][:3]
            assert X[k, 0] == pytest.approx(math.log(len(s)))
            assert X[k, 1] == pytest.approx(float(np.mean(logit(best3))))
            assert X[k, 2] == pytest.approx(math.log1p(float(s.sum())))


@pytest.mark.parametrize("shape_kernel", [True, False], ids=["shape-kernel", "qhull"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_cluster_table_equals_a_pandas_groupby_reference(ndim, shape_kernel, monkeypatch):
    """cluster_table works on arrays; its centroids and extents are exactly
    those of a pandas groupby over the same table (row order within a
    cluster kept, float64 means), including integer rows/cols, a shuffled
    index and clusters numbered out of order. Its hull areas are Qhull's:
    exactly without the C shape kernel, up to rounding with it."""
    import pandas as pd

    from napari_calc.core import cluster as cluster_mod
    from napari_calc.core.cluster import _hull_area, _cluster_scores, cluster_table, max_pair_distance
    from napari_calc.core.columns import cluster_columns

    monkeypatch.setattr(cluster_mod, "_SHAPE_KERNEL", shape_kernel)

    rng = np.random.default_rng(ndim)
    for t in range(40):
        n = int(rng.integers(0, 80))
        row = rng.integers(0, 3000, n)
        col = rng.integers(0, 2000, n)
        calcs = pd.DataFrame({
            "row": row, "col": col, "y_mm": row * 0.07, "x_mm": col * 0.07,
            "diameter_mm": rng.uniform(0.1, 1.0, n), "score": rng.random(n),
            "cluster_id": rng.choice([-1, 4, 0, 7, 2], n),
        })
        if ndim == 3:
            calcs["slice"] = rng.integers(0, 30, n)
            calcs["z_mm"] = calcs["slice"] * 1.0
        calcs.index = rng.permutation(n) + 100
        got = cluster_table(calcs, (0.07, 0.07), ndim=ndim)
        scores = _cluster_scores(calcs, None)
        rows = []
        for cid, g in calcs[calcs["cluster_id"] >= 0].groupby("cluster_id", sort=True):
            yx = g[["y_mm", "x_mm"]].to_numpy(float)
            pos = g[["z_mm", "y_mm", "x_mm"]].to_numpy(float) if ndim == 3 else yx
            rec = {"cluster_id": int(cid), "row": float(g["row"].mean()), "col": float(g["col"].mean()),
                   "y_mm": float(g["y_mm"].mean()), "x_mm": float(g["x_mm"].mean()),
                   "n_calcifications": len(g),
                   "max_extent_mm": float(max_pair_distance(pos) + g["diameter_mm"].mean()),
                   "area_mm2": _hull_area(yx), "score": scores[int(cid)]}
            if ndim == 3:
                rec["slice"] = float(g["slice"].mean())
                rec["z_mm"] = float(g["z_mm"].mean())
            rows.append(rec)
        if not rows:
            assert len(got) == 0 and list(got.columns) == cluster_columns(ndim)
            continue
        want = pd.DataFrame(rows, columns=cluster_columns(ndim))
        if shape_kernel:  # the monotone chain's rounding, not Qhull's
            np.testing.assert_allclose(got["area_mm2"], want["area_mm2"], rtol=1e-13, atol=0)
            got, want = got.drop(columns="area_mm2"), want.drop(columns="area_mm2")
        pd.testing.assert_frame_equal(got, want, check_exact=True)
