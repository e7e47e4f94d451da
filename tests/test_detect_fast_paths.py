"""Shortcuts detect takes for speed give what the general functions give:
the cluster ids set from arrays are those of ``assign_clusters`` on the
table, and ``candidate_probability`` (stage 1 computed once) is stage 1
then stage 2 as documented."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pandas as pd
import pytest

import napari_calc
from napari_calc.core.phantom import make_phantom

D = importlib.import_module("napari_calc.core.detect")
S = importlib.import_module("napari_calc.core.score")


@pytest.mark.parametrize("n_slices", [None, 3])
def test_cluster_ids_are_those_of_assign_clusters(n_slices):
    ph = make_phantom(seed=5, spacing_mm=0.2, n_slices=n_slices)
    det = napari_calc.detect(ph.image, cluster_min_score=0.05)
    calcs = det.calcifications
    assert (calcs["cluster_id"] >= 0).sum() >= 3
    again = calcs.copy()
    again["cluster_id"] = 12345
    D.assign_clusters(again, D.DetectionParams(cluster_min_score=0.05), 3 if n_slices else 2)
    pd.testing.assert_frame_equal(again, calcs, check_exact=True)


def test_candidate_probability_is_stage_two_of_stage_one():
    model = S.load_model()
    assert "context" in model
    rng = np.random.default_rng(0)
    det = napari_calc.detect(make_phantom(seed=6, spacing_mm=0.2).image, keep_min_score=0.0)
    raw = det.extra.join(det.calcifications[["row", "col", "diameter_mm", "contrast", "cnr"]])
    X = S.candidate_feature_matrix(raw)
    pos = np.column_stack([raw["row"] * 0.2, raw["col"] * 0.2]) + rng.normal(0, 0.01, (len(raw), 2))
    p1 = S.calc_probability(X, model)
    part = model["context"]
    Xc = np.column_stack([S._logistic_logit(X, model["calcification"]),
                          S.context_feature(pos, p1, part.get("radius_mm"))])
    want = S._sigmoid(S._logistic_logit(Xc, part))
    got = S.candidate_probability(X, pos, model)
    assert len(got) > 20
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n_slices,kw", [(4, dict()), (4, dict(max_candidates=40)),
                                         (4, dict(use_mask=False, max_candidates=300)), (1, dict())])
def test_stack_measures_only_the_kept_candidates(n_slices, kw):
    # the stack path (merge across slices, keep the strongest, then measure)
    # gives what measuring every slice's candidates and then merging gives
    ph = make_phantom(seed=7, spacing_mm=0.2, n_slices=n_slices)
    planes, spacing = ph.image.pixels, ph.image.spacing_mm
    p = D.DetectionParams(**kw)
    got = napari_calc.detect(ph.image, keep_min_score=0.0, **kw)
    from napari_calc.core.mask import breast_mask
    from napari_calc.core.score import noise_level_function

    mask = nlf = None  # one slice: its own mask and noise-level function
    if n_slices > 1:
        some = planes[:: max(1, len(planes) // 8)]
        mask = breast_mask(some.mean(axis=0, dtype=np.float32), spacing[1:]) if p.use_mask else None
        nlf = noise_level_function(some, mask)
    per = []
    for s, plane in enumerate(planes):
        d = D._detect_plane(plane, spacing[1:], p, 0, mask, nlf=nlf)
        d["slice"] = np.full(len(d["row"]), s, dtype=np.int64)
        per.append(d)
    c = D._merge_slices(per, p.nms_radius_mm / min(spacing[1:]))
    if len(c["row"]) > p.max_candidates:
        keep = D._top_k(c["snr"], p.max_candidates)
        c = {k: v[keep] for k, v in c.items()}
    score = D._score(c, spacing)
    order = np.lexsort((c["col"], c["row"], c["slice"]))
    want = pd.DataFrame({k: v[order] for k, v in c.items()
                         if k not in {"row", "col", "slice", "diameter_mm", "contrast", "cnr"}})
    assert len(want) > 20
    pd.testing.assert_frame_equal(got.extra, want, check_exact=True)
    np.testing.assert_array_equal(got.calcifications["score"].to_numpy(), score[order])
    np.testing.assert_array_equal(got.calcifications["slice"].to_numpy(), c["slice"][order])


def test_stack_with_an_empty_mask():
    ph = make_phantom(seed=7, spacing_mm=0.2, n_slices=3)
    det = napari_calc.detect(ph.image, mask=np.zeros(ph.image.pixels.shape[1:], bool))
    assert len(det.calcifications) == 0 and len(det.clusters) == 0
    assert list(det.calcifications.columns)[:2] == ["slice", "z_mm"]
    assert det.calcifications["slice"].dtype == np.int64 and det.extra["snr"].dtype == np.float64


def _merge_slices_reference(per_slice, radius_px):
    """The 3-D suppression rule written plainly: a k-d tree over all
    candidates (slice distance 1 scaled past the radius), a stable sort by
    decreasing SNR for the ranks, and every linked pair's weaker one dropped."""
    import math

    from scipy.spatial import cKDTree

    allc = {k: np.concatenate([d[k] for d in per_slice]) for k in per_slice[0]}
    n = len(allc["row"])
    if n == 0:
        return allc
    pts = np.column_stack([allc["slice"] * (radius_px + 1.0), allc["row"], allc["col"]]).astype(float)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-allc["snr"], kind="stable")] = np.arange(n)
    pairs = cKDTree(pts).query_pairs(r=math.sqrt(2.0) * (radius_px + 1.0) + 1e-9, output_type="ndarray")
    keep = np.ones(n, dtype=bool)
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        link = (np.abs(allc["slice"][i] - allc["slice"][j]) <= 1) & (
            (allc["row"][i] - allc["row"][j]) ** 2 + (allc["col"][i] - allc["col"][j]) ** 2 <= radius_px ** 2)
        i, j = i[link], j[link]
        keep[np.where(rank[i] < rank[j], j, i)] = False
    return {k: v[keep] for k, v in allc.items()}


@pytest.mark.parametrize("path", ["kernel", "numpy"])
def test_merge_slices_equals_the_plain_rule(path, monkeypatch):
    """Random candidates on few pixels (many neighbours), SNR ties, NaNs
    and infinities, gaps between slices, radius 0 to 6, 1 to 3 threads. The
    C kernel (candidates in raster order within each slice, as the slices
    give them) and the NumPy code (the kernel switched off, or candidates
    not in raster order) both equal the plain rule."""
    from napari_calc import _kernel

    calls = []
    if path == "kernel":
        real = _kernel.merge_slices
        monkeypatch.setattr(_kernel, "merge_slices", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(3)
    for t in range(300):
        per = []
        for s in range(int(rng.integers(1, 7))):
            m, side = int(rng.integers(0, 150)), int(rng.integers(4, 60))
            snr = np.round(rng.random(m) * 5, 1)
            snr[rng.random(m) < 0.05] = np.nan
            snr[rng.random(m) < 0.02] = np.inf
            row, col = rng.integers(0, side, m).astype(np.int64), rng.integers(0, side, m).astype(np.int64)
            if path == "kernel" and t % 7:  # raster order (every 7th trial: not, so NumPy)
                o = np.lexsort((col, row))
                row, col, snr = row[o], col[o], snr[o]
            per.append(dict(row=row, col=col, snr=snr,
                            slice=np.full(m, s + (2 if t % 5 == 0 else 0) * (s % 2), dtype=np.int64)))
        radius = float(rng.choice([0.0, 1.0, 2.5, 3.0, 4.3, 6.0]))
        monkeypatch.setattr(D, "_MERGE_KERNEL", path == "kernel")
        got = D._merge_slices(per, radius, nthreads=int(rng.integers(1, 4)))
        want = _merge_slices_reference(per, radius)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    if path == "kernel":
        assert len(calls) > 200  # the kernel ran (and the unsorted trials fell back)


def test_merge_slices_kernel_arguments():
    """The kernel refuses points out of slice-then-row order or too far out
    (the Python side then uses NumPy), and gives the same flags for any
    thread count on a stack-sized input."""
    from napari_calc import _kernel

    z = np.zeros(3, np.int64)
    with pytest.raises(ValueError):
        _kernel.merge_slices(z, np.array([0, 2, 1]), z, np.ones(3), 4.0, 2)
    with pytest.raises(ValueError):
        _kernel.merge_slices(np.array([1, 0, 0]), z, z, np.ones(3), 4.0, 2)
    with pytest.raises(ValueError):
        _kernel.merge_slices(z, z, np.array([0, 1 << 40, 0]), np.ones(3), 4.0, 2)
    assert _kernel.merge_slices(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                                np.zeros(0), 4.0, 2).shape == (0,)
    rng = np.random.default_rng(5)
    n = 60_000
    sl = np.sort(rng.integers(0, 30, n))
    row = rng.integers(0, 2000, n)
    o = np.lexsort((row, sl))
    sl, row = sl[o], row[o]
    col = rng.integers(0, 1600, n)
    snr = np.round(rng.random(n) * 20, 2)
    flags = [_kernel.merge_slices(sl, row, col, snr, 8.5 ** 2, 8, t) for t in (1, 2, 3)]
    np.testing.assert_array_equal(flags[0], flags[1])
    np.testing.assert_array_equal(flags[0], flags[2])
    per = [dict(row=row[sl == s], col=col[sl == s], snr=snr[sl == s], slice=sl[sl == s]) for s in range(30)]
    want = _merge_slices_reference(per, 8.5)
    got = {k: np.concatenate([d[k] for d in per])[flags[0]] for k in per[0]}
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def _tables(det):
    return det.calcifications, det.clusters, det.extra


def _assert_same(a, b):
    for x, y in zip(_tables(a), _tables(b)):
        pd.testing.assert_frame_equal(x, y, check_exact=True)


def test_reused_response_buffers_give_fresh_results(monkeypatch):
    """detect carves each plane's DoG response from per-thread buffers it
    keeps between calls, and the kernel keeps its own scratch: a larger
    image, then smaller ones and a stack in the same buffers, and calls in
    two threads at once, give exactly what freshly allocated arrays give."""
    import threading

    imgs = [make_phantom(seed=7, spacing_mm=0.1).image,
            make_phantom(seed=8, spacing_mm=0.2).image,
            make_phantom(seed=9, spacing_mm=0.1, size_mm=(60.0, 50.0)).image,
            make_phantom(seed=10, spacing_mm=0.2, n_slices=3).image]
    from napari_calc import _kernel

    D.release_buffers()
    assert _kernel.buffers_held() == 0
    reused = [napari_calc.detect(im) for im in imgs]
    # kept between calls, sized by the largest crop (the breast's box)
    assert 0.5 * imgs[0].pixels.size < D._SCRATCH.bufs[0].size <= imgs[0].pixels.size
    # and the kernel keeps the octave DoG's coarser levels (csrc/buffers.c),
    # each reused for later requests of its size down to half of it
    assert _kernel.buffers_held() > 0.5 * imgs[-1].pixels[0].size
    # after a detection, the buffers hold its response: another call must
    # not read stale values (every pixel of the crop is written)
    D._SCRATCH.bufs[0][:] = np.nan
    D._SCRATCH.bufs[1][:] = 255
    again = [napari_calc.detect(im) for im in imgs]
    monkeypatch.setattr(D, "_SCRATCH_MAX_PIXELS", 0)  # fresh arrays every time

    def detect_fresh(im):
        _kernel.release_buffers()  # and fresh kernel scratch
        return napari_calc.detect(im)

    fresh = [detect_fresh(im) for im in imgs]
    for a, b, c in zip(reused, again, fresh):
        _assert_same(a, c)
        _assert_same(b, c)
        assert len(c.calcifications) > 0
    monkeypatch.undo()
    out = {}

    def run(k):
        out[k] = [napari_calc.detect(im) for im in imgs[::-1]]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        for a, c in zip(out[k], fresh[::-1]):
            _assert_same(a, c)
    D.release_buffers()
    assert D._SCRATCH.bufs is None
    assert _kernel.buffers_held() == 0


def test_ramp_basis_is_its_documented_formula():
    """ramp_basis writes its columns in place; they are exactly the
    documented ones, in order (this is what the shipped coefficients are
    trained on)."""
    rng = np.random.default_rng(3)
    X = rng.normal(0, 2, (257, 4))
    X[:3] = [np.nan, np.inf, -np.inf, 0.0]
    knots = [[-1.0, 0.0, 2.5], [], [0.3], [-2.0, 1.0]]
    inter = [(0, 3), (2, 1)]
    cols = []
    for j, k in enumerate(knots):
        x = X[:, j]
        if not k:
            cols.append(x)
            continue
        cols.append(np.minimum(x, k[0]))
        cols += [np.clip(x, a, b) - a for a, b in zip(k[:-1], k[1:])]
        cols.append(np.maximum(x, k[-1]) - k[-1])
    cols += [np.maximum(X[:, i], 0.0) * (1.0 + np.clip(X[:, j], -1.0, 1.0)) for i, j in inter]
    want = np.column_stack(cols)
    got = S.ramp_basis(X, knots, inter)
    assert got.shape == want.shape == (257, len(S.basis_groups(knots, inter)))
    np.testing.assert_array_equal(got, want)
    assert S.ramp_basis(X[:0], knots, inter).shape == (0, want.shape[1])
    assert S.ramp_basis(X, [], []).shape == (257, 0)


@pytest.mark.parametrize("n_slices,kw", [(None, dict(cluster_min_score=0.05)), (3, dict(cluster_min_score=0.05)),
                                         (None, dict(cluster_min_score=1.0)),
                                         (None, dict(keep_min_score=0.0, cluster_min_score=0.0, cluster_radius_mm=2.0))])
def test_cluster_table_from_arrays_is_cluster_table_of_the_calcifications(n_slices, kw):
    # detect builds its cluster table from the arrays it made the
    # calcification table of, not through the DataFrame
    from napari_calc.core.cluster import cluster_table

    det = napari_calc.detect(make_phantom(seed=5, spacing_mm=0.2, n_slices=n_slices).image, **kw)
    want = cluster_table(det.calcifications, det.spacing_mm, ndim=det.ndim)
    pd.testing.assert_frame_equal(det.clusters, want, check_exact=True)
    if kw.get("cluster_min_score") == 1.0:
        assert len(det.clusters) == 0
    if "cluster_radius_mm" in kw:
        assert len(det.clusters) > 3


def _detect_with_and_without(monkeypatch, seed, spacing, kw, switch, spied="noise_nms"):
    """``detect`` of a phantom (``kw`` may hold ``n_slices``; every
    candidate kept unless it sets ``keep_min_score``) with the switch
    ``D.<switch>`` on, then off, spying on ``_kernel.<spied>``: ``(on, off,
    calls)``, each call ``(its keyword arguments, its result)``, after
    asserting that every table of the two is identical."""
    kw = dict(kw)
    n_slices = kw.pop("n_slices", None)
    kw.setdefault("keep_min_score", 0.0)
    image = make_phantom(seed=seed, spacing_mm=spacing, n_slices=n_slices).image
    from napari_calc import _kernel

    calls = []
    real = getattr(_kernel, spied)

    def spy(*a, **k):
        out = real(*a, **k)
        calls.append((k, out))
        return out

    monkeypatch.setattr(_kernel, spied, spy)
    on = napari_calc.detect(image, **kw)
    n_on = len(calls)
    monkeypatch.setattr(D, switch, False)
    off = napari_calc.detect(image, **kw)
    for a, b in ((on.calcifications, off.calcifications), (on.clusters, off.clusters), (on.extra, off.extra)):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    return on, off, (calls[:n_on], calls[n_on:])


@pytest.mark.parametrize("seed,spacing,kw", [(0, 0.07, dict()), (1, 0.14, dict(n_threads=1)),
                                             (2, 0.2, dict(use_mask=False)), (3, 0.1, dict(n_slices=3))])
def test_noise_and_peaks_in_one_pass_are_the_two_steps(monkeypatch, seed, spacing, kw):
    # _kernel.noise_nms (local noise and peaks in one pass over the
    # response) against tile_noise, detect's fix-up of the bad tiles and nms:
    # every table identical, and the one-pass kernel really ran (called on
    # its own: not with the DoG in one call)
    monkeypatch.setattr(D, "_DOG_NOISE_KERNEL", False)
    fused, _, (calls, after) = _detect_with_and_without(monkeypatch, seed, spacing, kw, "_NOISE_NMS_KERNEL")
    assert calls and all(out is not None for _, out in calls)
    assert len(fused.calcifications) > 10
    assert not after  # the switch off: the two steps ran


class _GarbageNumpy:
    """numpy, but ``empty`` gives arrays with every bit set (NaN as float,
    -1 as int): what a block the allocator hands out again may hold."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def empty(*args, **kwargs):
        out = np.empty(*args, **kwargs)
        out.reshape(-1).view(np.uint8).fill(0xFF)
        return out


@pytest.mark.parametrize("kernel_allocates", [False, True])
def test_dog_and_noise_pass_do_not_read_what_the_allocator_left(monkeypatch, kernel_allocates):
    # the DoG computes only the mask's rows ranges of the response, and the
    # noise pass tests whole rows for NaN: with buffers fresh from an
    # allocator that left NaN bits in them, the one call must still give
    # its result (not fall back to the two steps), in detect's reusable
    # buffers and in arrays the kernel allocates (above the cap); the same
    # tables as with clean memory
    from napari_calc import _kernel

    image = make_phantom(seed=4, spacing_mm=0.05).image
    kw = dict(max_candidates=40, keep_min_score=0.5)
    D.release_buffers()
    ref = napari_calc.detect(image, **kw)
    calls = []
    real = _kernel.dog_noise_nms

    def spy(*a, **k):
        out = real(*a, **k)
        calls.append((a[6] is None, out[2]))
        return out

    monkeypatch.setattr(_kernel, "dog_noise_nms", spy)
    monkeypatch.setattr(D, "np", _GarbageNumpy())
    monkeypatch.setattr(_kernel, "np", _GarbageNumpy())
    if kernel_allocates:
        monkeypatch.setattr(D, "_SCRATCH_MAX_PIXELS", 0)
    D.release_buffers()  # new buffers, from the garbage allocator
    try:
        got = napari_calc.detect(image, **kw)
    finally:
        D.release_buffers()
    assert [c[0] for c in calls] == [kernel_allocates]   # who allocated the response
    assert calls[0][1] is not None                      # the one call gave its result
    assert len(got.calcifications) > 10
    for a, b in ((got.calcifications, ref.calcifications), (got.clusters, ref.clusters), (got.extra, ref.extra)):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize("seed,spacing,kw", [(0, 0.07, dict()), (1, 0.14, dict(n_threads=1)),
                                             (2, 0.2, dict(use_mask=False)), (3, 0.1, dict(n_slices=3)),
                                             (4, 0.05, dict(max_candidates=40, keep_min_score=0.5))])
def test_dog_and_noise_pass_in_one_call_are_the_two_calls(monkeypatch, seed, spacing, kw):
    # _kernel.dog_noise_nms (the coarser levels merged into the response
    # band by band as the noise pass reads it) against dog_octaves then
    # noise_nms: every table identical, and the one call really ran, with a
    # result (not left to the two steps), once per slice
    one, _, (calls, after) = _detect_with_and_without(monkeypatch, seed, spacing, kw, "_DOG_NOISE_KERNEL",
                                                      spied="dog_noise_nms")
    assert len(calls) == kw.get("n_slices", 1) and all(out[2] is not None for _, out in calls)
    assert len(one.calcifications) > 10
    assert not after  # the switch off: the two calls ran


@pytest.mark.parametrize("seed,spacing,kw", [(0, 0.07, dict()), (1, 0.14, dict(n_threads=1)),
                                             (2, 0.2, dict(use_mask=False, n_threads=3)),
                                             (4, 0.05, dict(max_candidates=40, keep_min_score=0.5))])
def test_noise_level_function_on_the_dogs_thread_is_the_same(monkeypatch, seed, spacing, kw):
    # the noise-level function made inside the DoG's call (dog_noise_nms's
    # nlf: on one of its threads while the others filter) against the
    # function called on its own after the measurements: every table
    # identical, and the fit really came from the DoG's call
    own = []  # noise_level_function called on its own: with the switch on or off
    real_nlf = D.noise_level_function

    def counted(*a, **k):
        own.append(D._SIDE_NLF)
        return real_nlf(*a, **k)

    monkeypatch.setattr(D, "noise_level_function", counted)
    one, _, (calls, after) = _detect_with_and_without(monkeypatch, seed, spacing, kw, "_SIDE_NLF",
                                                      spied="dog_noise_nms")
    assert own == [False]  # the DoG's fit was used; the switch off: the function on its own
    assert len(calls) == 1 and "nlf" in calls[0][0] and calls[0][1][3] is not None
    assert calls[0][1][3][2] is not None  # bins, not the few-samples estimate
    assert len(one.calcifications) > 10
    assert after and all("nlf" not in k for k, _ in after)


def test_noise_level_function_of_a_stack_is_not_made_per_slice(monkeypatch):
    # a stack has one noise-level function for all its slices: no slice's
    # DoG call makes one
    image = make_phantom(seed=3, spacing_mm=0.1, n_slices=3).image
    from napari_calc import _kernel

    calls = []
    real = _kernel.dog_noise_nms

    def spy(*a, **k):
        calls.append(k)
        return real(*a, **k)

    monkeypatch.setattr(_kernel, "dog_noise_nms", spy)
    napari_calc.detect(image)
    assert len(calls) == 3 and all("nlf" not in k for k in calls)


@pytest.mark.parametrize("seed,spacing,kw", [(0, 0.07, dict(max_candidates=40)),
                                             (1, 0.14, dict(max_candidates=300, n_threads=1)),
                                             (2, 0.2, dict(max_candidates=25, use_mask=False)),
                                             (3, 0.1, dict(max_candidates=60, n_slices=3)),
                                             (4, 0.1, dict())])
def test_peaks_below_the_top_left_out_change_nothing(monkeypatch, seed, spacing, kw):
    # noise_nms's top (the peaks that cannot be among the max_candidates
    # highest SNRs left out of its list): every table identical to the
    # full list's, and the list really was shorter where there were more
    # peaks than max_candidates
    monkeypatch.setattr(D, "_DOG_NOISE_KERNEL", False)  # (noise_nms on its own)
    _, _, (with_top, full) = _detect_with_and_without(monkeypatch, seed, spacing, kw, "_NOISE_NMS_TOP")
    top = kw.get("max_candidates", D.DetectionParams().max_candidates)
    assert len(with_top) == len(full) > 0
    assert all(k.get("top") == top for k, _ in with_top) and all(k.get("top") == 0 for k, _ in full)
    for (_, a), (_, b) in zip(with_top, full):
        n_top, n_full = len(a[1]), len(b[1])
        assert n_top <= n_full
        if "max_candidates" in kw:  # (the default 3000 is more than these phantoms have)
            assert n_full > 4 * top
            assert top <= n_top < n_full / 2  # most of the weak peaks left out


@pytest.mark.parametrize("seed,spacing,kw", [(0, 0.07, dict()), (1, 0.14, dict(n_threads=1, keep_min_score=0.3)),
                                             (2, 0.2, dict(use_mask=False)), (3, 0.1, dict(n_slices=3)),
                                             (4, 0.1, dict(dtype="float32")), (5, 0.1, dict(keep_min_score=0.0))])
def test_large_cross_term_measured_for_the_kept_only_changes_nothing(monkeypatch, seed, spacing, kw):
    # the large scale's cross derivative (h3_rc, reported, not scored) left
    # out of local_hessian3 and measured after scoring for the kept
    # candidates: every table identical (h3_rc included) to measuring it for
    # all, and it really was left out -- but not when every candidate is kept
    kw = dict(kw)
    kw.setdefault("keep_min_score", D.DetectionParams().keep_min_score)  # (the helper's default keeps all)
    dtype = kw.pop("dtype", None)
    if dtype is not None:  # a float32 image (also goes to the kernel as it is)
        real_phantom = make_phantom

        def as_float(*a, **k):
            ph = real_phantom(*a, **k)
            ph.image.pixels = ph.image.pixels.astype(dtype)
            return ph

        monkeypatch.setattr(sys.modules[__name__], "make_phantom", as_float)
    from napari_calc import _kernel

    late = []
    real = _kernel.local_hessian
    monkeypatch.setattr(_kernel, "local_hessian", lambda *a, **k: late.append(len(a[1])) or real(*a, **k))
    on, off, (calls_on, calls_off) = _detect_with_and_without(monkeypatch, seed, spacing, kw,
                                                              "_LATE_LARGE_CROSS", spied="local_hessian3")
    n_on = len(on.calcifications)
    assert n_on > 5 and not on.extra["h3_rc"].isna().any()
    assert calls_off and all(k.get("cross") == (True, True, True) for k, _ in calls_off)
    if kw["keep_min_score"] > 0:
        assert calls_on and all(k.get("cross") == (True, True, False) for k, _ in calls_on)
        assert all(np.isnan(out[2, 2]).all() for _, out in calls_on)
        measured = sum(out.shape[-1] for _, out in calls_on)
        assert sum(late) == n_on < measured / 3  # the kept only, a few of those measured
    else:
        assert all(k.get("cross") == (True, True, True) for k, _ in calls_on) and not late
