"""The clusters' size and hull area in C (``_kernel.cluster_shape``, used
by the cluster table): the largest member distance bit for bit as
``max_pair_distance`` and its all-pairs NumPy form, the hull area as
Qhull's up to rounding, and the NumPy/Qhull path whenever the kernel
cannot take the positions."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import ConvexHull

from napari_calc import _kernel

C = importlib.import_module("napari_calc.core.cluster")


def _groups():
    """Point groups of 0 to 300 points (the 2-D hull-vertex path starts
    above 64) in 2 and 3 dimensions: scattered, on a lattice (ties,
    duplicates, points on hull edges), on one line, all in one place, and
    far from the origin (mm positions of a large detector)."""
    rng = np.random.default_rng(11)
    for dim in (2, 3):
        for m in (0, 1, 2, 3, 4, 7, 30, 64, 65, 150, 300):
            yield rng.uniform(0, 60, (m, dim))
            yield rng.integers(0, 6, (m, dim)) * 0.5
            t = rng.uniform(-5, 5, m)
            yield np.column_stack([t * 0.3 + 1, t * -0.7 + 2, t][:dim])  # one line
            yield np.full((m, dim), 12.5)
            yield rng.normal(0, 3, (m, dim)) + 300.0


def _all_pairs(p):
    return float(np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)).max()) if len(p) else 0.0


def _qhull_area(yx):
    return C._hull_area(yx)


def test_each_group_alone_matches_numpy_and_qhull():
    for p in _groups():
        p = np.ascontiguousarray(p, dtype=float)
        far, area = _kernel.cluster_shape(p, np.array([0, len(p)], dtype=np.intp), p.shape[1] - 2,
                                          p.shape[1] - 1)
        assert far.shape == area.shape == (1,)
        # the distance: the very value of every pair in NumPy, and of
        # max_pair_distance (which looks at hull vertices above 64 points)
        assert far[0] == _all_pairs(p)
        if len(p) >= 2:
            assert far[0] == C.max_pair_distance(p)
        want = _qhull_area(p[:, -2:])
        assert area[0] == pytest.approx(want, rel=1e-12, abs=1e-12), (len(p), p[:3])
        if len(np.unique(p[:, -2:], axis=0)) < 3:
            assert area[0] == 0.0


def test_known_shapes_exactly():
    # a unit square with its centre, an edge midpoint and a repeated corner
    sq = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [0.5, 0], [0, 0]], dtype=float)
    far, area = _kernel.cluster_shape(sq, np.array([0, 7], dtype=np.intp))
    assert area[0] == 1.0 and far[0] == np.sqrt(2.0)
    # a 3 x 4 right triangle, and the same lifted into 3-D (z first): the
    # area is in (y, x) whatever z does; the distance counts z
    tri = np.array([[0, 0], [3, 0], [0, 4]], dtype=float)
    far, area = _kernel.cluster_shape(tri, np.array([0, 3], dtype=np.intp))
    assert area[0] == 6.0 and far[0] == 5.0
    tri3 = np.column_stack([[0.0, 0.0, 12.0], tri])
    far, area = _kernel.cluster_shape(tri3, np.array([0, 3], dtype=np.intp), 1, 2)
    assert area[0] == 6.0 and far[0] == 13.0  # (0, 3, 0) to (12, 0, 4)


def test_many_groups_in_one_call_are_each_group_alone():
    groups = [np.ascontiguousarray(p[:, :2], dtype=float) for p in _groups() if p.shape[1] == 3]
    pos = np.concatenate(groups)
    start = np.cumsum([0] + [len(g) for g in groups]).astype(np.intp)
    far, area = _kernel.cluster_shape(pos, start)
    for k, g in enumerate(groups):
        f1, a1 = _kernel.cluster_shape(g, np.array([0, len(g)], dtype=np.intp))
        assert far[k] == f1[0] and area[k] == a1[0]


def test_the_kernel_refuses_what_it_cannot_take():
    ok = np.zeros((3, 2))
    bad_calls = [
        (np.array([[0.0, 0.0], [np.nan, 1.0], [2.0, 2.0]]), [0, 3], 0, 1),  # NaN
        (np.array([[0.0, 0.0], [np.inf, 1.0], [2.0, 2.0]]), [0, 3], 0, 1),  # infinite
        (np.zeros((3, 1)), [0, 3], 0, 0),  # one dimension
        (np.zeros((3, 4)), [0, 3], 0, 1),  # four
        (ok, [0, 2], 0, 1),  # the groups stop short of the points
        (ok, [1, 3], 0, 1),  # or do not start at the first
        (ok, [0, 3, 2], 0, 1),  # or go back
        (ok, [0, 3], 1, 1),  # one axis twice
        (ok, [0, 3], 0, 2),  # an axis out of range
    ]
    for pos, start, ay, ax in bad_calls:
        with pytest.raises(ValueError):
            _kernel.cluster_shape(np.ascontiguousarray(pos), np.array(start, dtype=np.intp), ay, ax)
    with pytest.raises(ValueError):
        _kernel.cluster_shape(ok, np.zeros(0, dtype=np.intp))
    far, area = _kernel.cluster_shape(np.zeros((0, 2)), np.array([0], dtype=np.intp))
    assert far.shape == area.shape == (0,)


def test_cluster_shapes_falls_back_to_numpy_and_qhull(monkeypatch):
    """What the kernel refuses (a NaN position) goes to max_pair_distance
    and Qhull, as does everything with the kernel switched off."""
    rng = np.random.default_rng(5)
    pos = rng.uniform(0, 40, (40, 2))
    start, end = np.array([0, 10, 25]), np.array([10, 25, 40])
    want = ([C.max_pair_distance(pos[s:e]) for s, e in zip(start, end)],
            [C._hull_area(pos[s:e]) for s, e in zip(start, end)])
    monkeypatch.setattr(C, "_SHAPE_KERNEL", False)
    far, area = C._cluster_shapes(pos, start, end)
    assert far.tolist() == want[0] and area.tolist() == want[1]
    monkeypatch.setattr(C, "_SHAPE_KERNEL", True)
    far, area = C._cluster_shapes(pos, start, end)
    assert far.tolist() == want[0]
    np.testing.assert_allclose(area, want[1], rtol=1e-13, atol=0)
    # groups that are not consecutive rows (a gap, then out of order): each
    # its own slice, as asked
    for s_, e_, k_ in (([0, 25], [10, 40], [0, 2]), ([25, 0], [40, 10], [2, 0])):
        far, area = C._cluster_shapes(pos, np.array(s_), np.array(e_))
        assert far.tolist() == [want[0][k] for k in k_]
        np.testing.assert_allclose(area, [want[1][k] for k in k_], rtol=1e-13, atol=0)
    pos[3, 0] = np.nan
    monkeypatch.setattr(C, "_SHAPE_KERNEL", False)
    want = C._cluster_shapes(pos, start, end)
    monkeypatch.setattr(C, "_SHAPE_KERNEL", True)
    got = C._cluster_shapes(pos, start, end)
    # the whole call on the NumPy/Qhull path: Qhull's own areas, exactly
    for g, w in zip(got, want):
        assert g.tobytes() == w.tobytes()


def test_detect_cluster_table_with_and_without_the_kernel(monkeypatch):
    """On a phantom with clusters: the same table but for the hull areas'
    rounding, and the areas are the members' Qhull hull areas."""
    import napari_calc
    from napari_calc.core.phantom import make_phantom

    img = make_phantom(seed=4, shape=(700, 600), n_clusters=2).image
    on = napari_calc.detect(img)
    monkeypatch.setattr(C, "_SHAPE_KERNEL", False)
    off = napari_calc.detect(img)
    assert len(on.clusters) >= 1
    pd.testing.assert_frame_equal(on.calcifications, off.calcifications, check_exact=True)
    pd.testing.assert_frame_equal(on.clusters.drop(columns="area_mm2"), off.clusters.drop(columns="area_mm2"),
                                  check_exact=True)
    np.testing.assert_allclose(on.clusters["area_mm2"], off.clusters["area_mm2"], rtol=1e-13, atol=0)
    calcs = on.calcifications
    for _, cl in on.clusters.iterrows():
        yx = calcs.loc[calcs["cluster_id"] == cl["cluster_id"], ["y_mm", "x_mm"]].to_numpy(float)
        assert cl["area_mm2"] == pytest.approx(ConvexHull(yx).volume, rel=1e-13)
