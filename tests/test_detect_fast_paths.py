"""Shortcuts detect takes for speed give what the general functions give:
the cluster ids set from arrays are those of ``assign_clusters`` on the
table, and ``candidate_probability`` (stage 1 computed once) is stage 1
then stage 2 as documented."""

from __future__ import annotations

import importlib

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
