"""Points within a radius in C (``_kernel.neighbour_sums``,
``_kernel.radius_clusters``): the pairs of ``cKDTree.query_pairs``, the
context sums of the score model and the clustering rule, against the
NumPy/SciPy code paths, bit for bit."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_calc import _kernel

S = importlib.import_module("napari_calc.core.score")
C = importlib.import_module("napari_calc.core.cluster")


def _point_sets():
    """(points, radius): scattered, on lattices (distances exactly the
    radius, duplicates), dense spots, in 1 to 3 dimensions, and spreads
    far wider than the radius (the grid's bisection path)."""
    rng = np.random.default_rng(3)
    for dim in (1, 2, 3):
        for n in (2, 3, 50, 700):
            yield rng.uniform(0, 60, (n, dim)), float(rng.uniform(0.5, 8))
            yield rng.integers(0, 12, (n, dim)) * 0.5, 1.0  # exact ties at r, duplicates
            spots = rng.normal(0, 0.4, (n, dim)) + rng.integers(0, 3, (n, 1)) * 20.0
            yield spots, 0.7
            yield rng.uniform(0, 1e5, (n, dim)), 30.0  # many more cells than points
    yield np.zeros((40, 2)), 1e-3  # all in one place
    yield np.array([[0.0, 0.0], [0.0, 3.0], [4.0, 0.0], [0.0, 20.0]]), 5.0


def _large_point_sets():
    """(points, radius) of 3,000 points, which neighbour_sums splits
    between its threads by strips of its grid: scattered in 2-D and 3-D,
    and in three dense spots (the strips uneven, some perhaps empty)."""
    rng = np.random.default_rng(4)
    yield rng.uniform(0, 200, (3000, 2)), 6.0
    yield rng.uniform(0, 60, (3000, 3)), 5.0
    yield rng.normal(0, 2.0, (3000, 2)) + rng.integers(0, 3, (3000, 1)) * 40.0, 1.5


def _pairs(pts, r):
    pairs = cKDTree(pts).query_pairs(r, output_type="ndarray")
    return (np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]]))


@pytest.mark.parametrize("nthreads", [1, 2, 3])
def test_neighbour_sums_are_the_kd_tree_pairs_summed_in_index_order(nthreads):
    rng = np.random.default_rng(nthreads)
    for k, (pts, r) in enumerate([*_point_sets(), *_large_point_sets()]):
        w = rng.random(len(pts))
        if k % 3 == 1 and len(w) >= 20:
            # signed zeros, infinities and a NaN: the same sums to the bit
            w[::5] = -0.0
            w[3::17] = np.inf
            w[7::19] = -np.inf
            w[11] = np.nan
        total, count = _kernel.neighbour_sums(np.ascontiguousarray(pts, dtype=float), w, r, nthreads)
        i, j = _pairs(pts, r)
        np.testing.assert_array_equal(count, np.bincount(i, minlength=len(pts)))
        order = np.lexsort((j, i))
        want = np.bincount(i[order], weights=w[j[order]], minlength=len(pts))
        assert total.tobytes() == want.tobytes(), (pts.shape, r)


def test_context_feature_kernel_and_numpy_paths_agree_bitwise(monkeypatch):
    rng = np.random.default_rng(0)
    for pts, r in _point_sets():
        prob = rng.random(len(pts))
        fast = S.context_feature(pts, prob, r)
        with monkeypatch.context() as m:
            m.setattr(S, "_NEIGHBOUR_KERNEL", False)
            slow = S.context_feature(pts, prob, r)
        assert fast.tobytes() == slow.tobytes()
        # the sums of before (cKDTree's pair order): the same to rounding
        i, j = _pairs(pts, r)
        np.testing.assert_allclose(fast, np.log1p(np.bincount(i, weights=prob[j], minlength=len(pts))),
                                   rtol=1e-14, atol=0)


@pytest.mark.parametrize("nthreads", [1, 2])
def test_cluster_kernel_gives_the_numpy_labels(monkeypatch, nthreads):
    for pts, r in _point_sets():
        for min_size in (2, 3, 5):
            got = _kernel.radius_clusters(np.ascontiguousarray(pts, dtype=float), r, min_size, nthreads)
            with monkeypatch.context() as m:
                m.setattr(C, "_CLUSTER_KERNEL", False)
                want = C.cluster_calcifications(pts, radius_mm=r, min_size=min_size)
            np.testing.assert_array_equal(got, want)
            assert C.cluster_calcifications(pts, radius_mm=r, min_size=min_size).tobytes() == want.tobytes()


def test_the_kernels_refuse_what_they_cannot_take():
    pts = np.array([[0.0, 0.0], [np.nan, 1.0]])
    with pytest.raises(ValueError):
        _kernel.neighbour_sums(pts, np.ones(2), 1.0)
    with pytest.raises(ValueError):
        _kernel.radius_clusters(pts, 1.0, 3)
    ok = np.zeros((3, 2))
    for r in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError):
            _kernel.neighbour_sums(ok, np.ones(3), r)
    with pytest.raises(ValueError):
        _kernel.radius_clusters(ok, 1.0, 1)
    with pytest.raises(ValueError):
        _kernel.neighbour_sums(np.zeros((3, 4)), np.ones(3), 1.0)  # 4 dimensions
    with pytest.raises(ValueError):
        _kernel.neighbour_sums(ok, np.ones(2), 1.0)
    total, count = _kernel.neighbour_sums(np.zeros((0, 2)), np.zeros(0), 1.0)
    assert total.shape == count.shape == (0,)
    assert _kernel.radius_clusters(np.zeros((0, 2)), 1.0, 3).shape == (0,)


def test_non_finite_positions_are_refused_as_before(monkeypatch):
    # the kernel leaves them to SciPy, whose k-d tree refuses them (as it did
    # before the kernel): the same error with and without it
    pts = np.array([[0.0, 0.0], [0.0, 1.0], [np.inf, 0.0]])
    for kernel in (True, False):
        monkeypatch.setattr(S, "_NEIGHBOUR_KERNEL", kernel)
        monkeypatch.setattr(C, "_CLUSTER_KERNEL", kernel)
        with pytest.raises(ValueError, match="finite"):
            S.context_feature(pts, np.array([0.5, 0.25, 1.0]), 2.0)
        with pytest.raises(ValueError, match="finite"):
            C.cluster_calcifications(pts, radius_mm=2.0)


@pytest.mark.parametrize("kernel", [True, False])
def test_a_border_point_between_two_clusters_takes_the_lower_id(monkeypatch, kernel):
    monkeypatch.setattr(C, "_CLUSTER_KERNEL", kernel)
    # 0 is within 1 mm (inclusive) of one core point of each cluster, and
    # has too few neighbours to be a core point itself
    x = [0.0, 1.0, 1.1, 1.2, 1.3, -1.0, -1.1, -1.2, -1.3, 7.0]
    pts = np.column_stack([np.zeros(len(x)), x])
    labels = C.cluster_calcifications(pts, radius_mm=1.0, min_size=4)
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 0, 1, 1, 1, 1, -1])
    # the same in the other index order: the ids follow the first core point
    labels = C.cluster_calcifications(pts[::-1].copy(), radius_mm=1.0, min_size=4)
    np.testing.assert_array_equal(labels, [-1, 0, 0, 0, 0, 1, 1, 1, 1, 0])
