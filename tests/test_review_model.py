"""The Qt-free review model: actions, undo/redo, clusters, navigation."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from napari_calc.core.cluster import cluster_calcifications, cluster_table
from napari_calc.core.columns import calc_columns
from napari_calc.core.detect import DetectionParams
from napari_calc.core.detections import Detections
from napari_calc.core.errors import InvalidParameterError
from napari_calc.core.review import (
    DISTRIBUTIONS,
    MORPHOLOGIES,
    REVIEW_COLUMNS,
    SUSPICION,
    ReviewSession,
)
from napari_calc.core.cluster import max_pair_distance

SP = 0.1  # mm per pixel


def make_det(points, shape=(1000, 1000), spacing=SP, ndim=2):
    """Detections from (row, col, score) or (slice, row, col, score) tuples."""
    pts = np.asarray(points, dtype=float).reshape(-1, 4 if ndim == 3 else 3)
    n = len(pts)
    sl = pts[:, 0].astype(np.int64) if ndim == 3 else None
    r, c, sc = pts[:, -3].astype(np.int64), pts[:, -2].astype(np.int64), pts[:, -1]
    df = pd.DataFrame({
        "calc_id": np.arange(n, dtype=np.int64), "row": r, "col": c,
        "y_mm": r * spacing, "x_mm": c * spacing, "diameter_mm": np.full(n, 0.3),
        "contrast": np.linspace(1, 2, n), "cnr": np.linspace(3, 4, n), "score": sc,
        "cluster_id": np.full(n, -1, dtype=np.int64),
        "status": pd.Series(["candidate"] * n, dtype=object),
    })
    sp = (spacing, spacing)
    if ndim == 3:
        df.insert(0, "z_mm", sl * 1.0)
        df.insert(0, "slice", sl)
        sp = (1.0, spacing, spacing)
        shape = (10, *shape[-2:])
    p = DetectionParams(cluster_min_score=0.5)  # explicit: the tests below rely on 0.5
    return Detections(calcifications=df[calc_columns(ndim)], clusters=pd.DataFrame(), spacing_mm=sp,
                      image_shape=shape, params=dict(p.__dict__))


# three close together (a cluster), two far singles, one low-score one near the cluster
TRIO = [(100, 100, 0.9), (120, 110, 0.8), (110, 130, 0.7), (700, 700, 0.9), (730, 700, 0.85),
        (105, 160, 0.2)]


def cid(s, calc_id):
    df = s.detections.calcifications
    return int(df.loc[df.calc_id == calc_id, "cluster_id"].iloc[0])


def status(s, calc_id):
    df = s.detections.calcifications
    return df.loc[df.calc_id == calc_id, "status"].iloc[0]


def test_label_vocabularies():
    assert MORPHOLOGIES == ("punctate", "amorphous", "coarse heterogeneous", "fine pleomorphic",
                            "fine linear/branching")
    assert DISTRIBUTIONS == ("diffuse", "regional", "grouped", "linear", "segmental")
    assert SUSPICION == ("benign", "suspicious")


def test_session_starts_from_detect_output_unchanged(phantom_det):
    det = phantom_det
    before = det.calcifications.copy()
    s = ReviewSession(det, annotator="ada")
    df = s.detections.calcifications
    assert list(df.columns) == list(det.calcifications.columns) + REVIEW_COLUMNS
    pd.testing.assert_frame_equal(df[det.calcifications.columns], det.calcifications)
    pd.testing.assert_frame_equal(s.detections.clusters, det.clusters)
    assert (df[REVIEW_COLUMNS] == "").all().all()
    s.reject(det.calcifications.calc_id.iloc[:5])
    pd.testing.assert_frame_equal(det.calcifications, before)  # input never modified


@pytest.fixture(scope="module")
def phantom_det():
    from napari_calc.core.detect import detect
    from napari_calc.core.phantom import make_phantom

    return detect(make_phantom(seed=5, size_mm=(80, 64), n_clusters=1, n_singles=3).image)


def test_status_actions_stamp_annotator_and_time():
    s = ReviewSession(make_det(TRIO), annotator="ada")
    t0 = datetime.now(timezone.utc)
    s.accept([0, 3])
    s.annotator = "bob"
    s.reject(1)
    df = s.detections.calcifications.set_index("calc_id")
    assert df.loc[0, "status"] == "accepted" and df.loc[3, "status"] == "accepted"
    assert df.loc[1, "status"] == "rejected" and df.loc[2, "status"] == "candidate"
    assert df.loc[0, "annotator"] == "ada" and df.loc[1, "annotator"] == "bob"
    assert df.loc[2, "annotator"] == "" and df.loc[2, "reviewed_at"] == ""
    for i in (0, 1, 3):
        ts = datetime.fromisoformat(df.loc[i, "reviewed_at"])
        assert ts.tzinfo is not None and ts.utcoffset().total_seconds() == 0
        assert df.loc[i, "reviewed_at"].endswith("Z")
        assert abs((ts - t0).total_seconds()) < 60
    assert df.loc[0, "created_at"] == ""
    s.reset([0, 1])
    assert status(s, 0) == "candidate" and status(s, 1) == "candidate"
    assert [h["op"] for h in s.history] == ["accept", "reject", "reset"]
    assert s.history[1]["annotator"] == "bob"


def test_added_stays_added_on_accept_and_reset():
    s = ReviewSession(make_det(TRIO), annotator="ada")
    new = s.add(500, 500, morphology="amorphous")
    assert new == 6
    r = s.row(new)
    assert r["status"] == "added" and r["score"] == 1.0
    assert r["y_mm"] == pytest.approx(50.0) and r["x_mm"] == pytest.approx(50.0)
    assert np.isnan(r["contrast"]) and np.isnan(r["cnr"])
    assert r["created_at"] and r["created_at"] == r["reviewed_at"] and r["annotator"] == "ada"
    assert r["morphology"] == "amorphous"
    s.accept(new)
    assert status(s, new) == "added"
    s.reject(new)
    assert status(s, new) == "rejected"
    s.reset(new)
    assert status(s, new) == "added"


def test_undo_back_to_start_and_redo_forward_are_exact():
    rng = np.random.default_rng(7)
    pts = [(int(r), int(c), float(sc)) for r, c, sc in
           zip(rng.integers(0, 1000, 60), rng.integers(0, 1000, 60), rng.random(60))]
    s = ReviewSession(make_det(pts), annotator="ada")
    states = [(s.detections.calcifications, s.detections.clusters)]
    for k in range(28):
        ids = s.detections.calcifications.calc_id.to_numpy()
        pick = [int(x) for x in rng.choice(ids, size=int(rng.integers(1, 4)), replace=False)]
        op = k % 7
        if op == 0:
            s.accept(pick)
        elif op == 1:
            s.reject(pick)
        elif op == 2:
            s.add(int(rng.integers(0, 1000)), int(rng.integers(0, 1000)), suspicion="suspicious")
        elif op == 3:
            s.delete(pick)
        elif op == 4:
            s.move(pick[0], int(rng.integers(0, 1000)), int(rng.integers(0, 1000)))
        elif op == 5:
            s.set_labels(pick, morphology=MORPHOLOGIES[k % 5], distribution="grouped")
        else:
            s.reset(pick)
        states.append((s.detections.calcifications, s.detections.clusters))
    # earlier frames were never mutated by later actions
    assert len({id(df) for df, _ in states}) == len(states)
    for k in range(len(states) - 1, 0, -1):
        pd.testing.assert_frame_equal(s.detections.calcifications, states[k][0])
        pd.testing.assert_frame_equal(s.detections.clusters, states[k][1])
        assert s.undo()
    pd.testing.assert_frame_equal(s.detections.calcifications, states[0][0])
    pd.testing.assert_frame_equal(s.detections.clusters, states[0][1])
    assert not s.can_undo and not s.undo() and s.can_redo
    for k in range(1, len(states)):
        assert s.redo()
        pd.testing.assert_frame_equal(s.detections.calcifications, states[k][0])
        pd.testing.assert_frame_equal(s.detections.clusters, states[k][1])
    assert not s.can_redo and not s.redo()


def test_new_action_clears_redo_and_ids_are_never_reused():
    s = ReviewSession(make_det(TRIO))
    a = s.add(10, 10)
    s.undo()
    b = s.add(20, 20)  # the undone add's id is not reused
    assert b != a
    assert not s.can_redo
    s.delete(b)
    s.undo()
    assert s.row(b)["row"] == 20


def test_undo_and_redo_ids_name_the_candidates_they_act_on():
    """What the panel shows after an undo: the candidate it changed back."""
    s = ReviewSession(make_det(TRIO))
    assert s.undo_ids == [] and s.redo_ids == []
    s.accept(2)
    s.set_labels([0, 1], morphology="punctate")
    assert s.undo_ids == [0, 1]
    s.undo()
    assert s.undo_ids == [2] and s.redo_ids == [0, 1]
    s.undo()
    assert s.undo_ids == [] and s.redo_ids == [2]


def test_rejecting_a_member_dissolves_a_three_cluster():
    s = ReviewSession(make_det(TRIO))
    assert [cid(s, i) for i in range(6)] == [0, 0, 0, -1, -1, -1]  # id 5 is below the threshold
    cl = s.detections.clusters
    assert len(cl) == 1 and int(cl.n_calcifications.iloc[0]) == 3
    s.reject(1)
    assert (s.detections.calcifications.cluster_id == -1).all()
    assert len(s.detections.clusters) == 0
    s.undo()
    assert len(s.detections.clusters) == 1 and cid(s, 1) == 0


def test_adding_near_two_singles_forms_a_cluster():
    s = ReviewSession(make_det([(700, 700, 0.9), (730, 700, 0.85), (100, 100, 0.9)]))
    assert len(s.detections.clusters) == 0
    new = s.add(715, 720)
    cl = s.detections.clusters
    assert len(cl) == 1 and int(cl.n_calcifications.iloc[0]) == 3
    members = set(s.cluster_members(int(cl.cluster_id.iloc[0])).tolist())
    assert members == {0, 1, new}
    assert cl.row.iloc[0] == pytest.approx((700 + 730 + 715) / 3)
    s.delete(new)
    assert len(s.detections.clusters) == 0
    s.undo()
    assert len(s.detections.clusters) == 1


def test_moving_a_member_away_breaks_the_cluster():
    s = ReviewSession(make_det(TRIO))
    s.move(2, 900, 900)
    r = s.row(2)
    assert (r["row"], r["col"]) == (900, 900)
    assert r["y_mm"] == pytest.approx(90.0) and r["x_mm"] == pytest.approx(90.0)
    assert len(s.detections.clusters) == 0
    with pytest.raises(InvalidParameterError):
        s.move(2, 5000, 0)
    with pytest.raises(InvalidParameterError):
        s.move([1, 2], 10, 10)


def test_threshold_and_accept_below_it_drive_clustering():
    s = ReviewSession(make_det([(100, 100, 0.9), (120, 110, 0.8), (110, 130, 0.3), (900, 900, 0.1)]))
    assert len(s.detections.clusters) == 0  # id 2 is below the 0.5 default
    assert set(s.visible_ids().tolist()) == {0, 1}
    s.accept(2)  # an accepted calcification clusters whatever its score
    assert len(s.detections.clusters) == 1 and cid(s, 2) == 0
    assert 2 in s.visible_ids()
    s.undo()
    n_undo = len(s.history)
    s.set_threshold(0.25)
    assert len(s.detections.clusters) == 1 and 2 in s.visible_ids() and 3 not in s.visible_ids()
    assert s.threshold == 0.25 and not s.can_undo  # a view setting, not an action
    assert s.history[-1]["op"] == "threshold" and len(s.history) == n_undo + 1
    s.reject(0)  # rejected never clusters, whatever the threshold
    assert len(s.detections.clusters) == 0
    with pytest.raises(InvalidParameterError):
        s.set_threshold(float("nan"))


def test_labels_validate_set_clear_and_undo():
    s = ReviewSession(make_det(TRIO), annotator="ada")
    s.set_labels([0, 1], morphology="fine pleomorphic", distribution="grouped", suspicion="suspicious")
    df = s.detections.calcifications.set_index("calc_id")
    assert df.loc[0, "morphology"] == "fine pleomorphic" and df.loc[1, "suspicion"] == "suspicious"
    s.set_labels([0], suspicion="")  # clear one, keep the others
    df = s.detections.calcifications.set_index("calc_id")
    assert df.loc[0, "suspicion"] == "" and df.loc[0, "morphology"] == "fine pleomorphic"
    for bad in (dict(morphology="round"), dict(distribution="clustered"), dict(suspicion="maybe")):
        with pytest.raises(InvalidParameterError):
            s.set_labels([0], **bad)
    with pytest.raises(InvalidParameterError):
        s.add(10, 10, morphology="huge")
    with pytest.raises(TypeError):
        s.set_labels([0], colour="red")
    n = len(s.history)
    s.set_labels([0])  # nothing to set: no action
    assert len(s.history) == n
    s.undo()
    df = s.detections.calcifications.set_index("calc_id")
    assert df.loc[0, "suspicion"] == "suspicious"
    s.undo()
    assert (s.detections.calcifications[REVIEW_COLUMNS] == "").all().all()


def test_bad_ids_and_positions_are_refused_without_side_effects():
    s = ReviewSession(make_det(TRIO))
    before = s.detections.calcifications
    with pytest.raises(InvalidParameterError, match="unknown calc_id"):
        s.accept([0, 99])
    with pytest.raises(InvalidParameterError):
        s.add(-1, 5)
    with pytest.raises(InvalidParameterError):
        s.add(5, 5, slice=3)  # 2-D image
    with pytest.raises(InvalidParameterError):
        s.add(5, 5, diameter_mm=-1)
    assert s.detections.calcifications is before and not s.history and not s.can_undo
    s.accept([])  # nothing: no action
    assert not s.history


def test_3d_add_and_move_need_a_slice():
    s = ReviewSession(make_det([(2, 100, 100, 0.9), (3, 120, 110, 0.8), (2, 110, 130, 0.7)], ndim=3))
    assert len(s.detections.clusters) == 1
    with pytest.raises(InvalidParameterError):
        s.add(50, 50)
    new = s.add(50, 50, slice=4)
    r = s.row(new)
    assert r["slice"] == 4 and r["z_mm"] == pytest.approx(4.0)
    s.move(new, 60, 60)  # keeps its slice
    assert s.row(new)["slice"] == 4
    s.move(new, 60, 60, slice=7)
    assert s.row(new)["z_mm"] == pytest.approx(7.0)
    s.move(0, 100, 100, slice=9)  # 7 mm away in z: the cluster breaks
    assert len(s.detections.clusters) == 0


def test_navigation_in_score_order():
    s = ReviewSession(make_det([(10, 10, 0.6), (20, 20, 0.9), (30, 30, 0.7), (40, 40, 0.9), (50, 50, 0.1)]))
    assert s.next_id(None) == 1
    assert s.next_id(1) == 3  # tie on score: by calc_id
    assert s.next_id(3) == 2
    assert s.next_id(2) == 0
    assert s.next_id(0) is None  # id 4 is below the threshold
    assert s.next_id(0, visible_only=False) == 4
    assert s.next_id(2, direction=-1) == 3
    assert s.next_id(None, direction=-1) == 0
    s.accept(3)
    assert s.next_id(1, status_filter="candidate") == 2
    assert s.next_id(None, status_filter=["accepted"]) == 3
    s.delete(2)
    assert s.next_id(2) == 1  # a vanished id restarts from the top


def test_next_cluster_in_score_order():
    pts = [(100, 100, 0.6), (120, 110, 0.6), (110, 130, 0.6),
           (700, 700, 0.95), (730, 700, 0.95), (715, 720, 0.95)]
    s = ReviewSession(make_det(pts))
    cl = s.detections.clusters
    assert len(cl) == 2
    best = int(cl.sort_values("score", ascending=False).cluster_id.iloc[0])
    other = int(cl.sort_values("score", ascending=False).cluster_id.iloc[1])
    assert s.next_cluster(None) == best
    assert s.next_cluster(best) == other
    assert s.next_cluster(other) is None
    assert s.next_cluster(other, direction=-1) == best


def test_subscribers_hear_every_change():
    s = ReviewSession(make_det(TRIO))
    heard = []
    unsub = s.subscribe(heard.append)
    s.accept(0)
    s.reject(1)
    new = s.add(400, 400)
    s.move(new, 410, 410)
    s.set_labels([0], morphology="punctate")
    s.delete(new)
    s.undo()
    s.redo()
    s.reset(0)
    s.set_threshold(0.1)
    assert heard == ["accept", "reject", "add", "move", "labels", "delete", "undo", "redo", "reset",
                     "threshold"]
    unsub()
    s.accept(2)
    assert len(heard) == 10


def test_cluster_table_matches_a_full_recomputation_after_edits():
    """The incremental cluster table equals cluster_table on the same rows."""
    rng = np.random.default_rng(3)
    pts = [(int(r), int(c), float(sc)) for r, c, sc in
           zip(rng.integers(0, 1000, 300), rng.integers(0, 1000, 300), rng.random(300))]
    det = make_det(pts)
    s = ReviewSession(det)
    p = s.params
    for k in range(15):
        ids = s.detections.calcifications.calc_id.to_numpy()
        pick = [int(x) for x in rng.choice(ids, size=3, replace=False)]
        [s.reject, s.accept, s.delete, lambda q: s.add(int(rng.integers(1000)), int(rng.integers(1000))),
         s.reset][k % 5](pick)
        if k % 4 == 3:
            s.undo()
        df = s.detections.calcifications
        take = (df.status != "rejected") & ((df.score >= s.threshold) | df.status.isin(["accepted", "added"]))
        want = np.full(len(df), -1)
        want[take.to_numpy()] = cluster_calcifications(df.loc[take, ["y_mm", "x_mm"]].to_numpy(float),
                                                       radius_mm=p.cluster_radius_mm,
                                                       min_size=p.min_cluster_size)
        # the same grouping (ids are kept stable through edits, see below)
        got = df.cluster_id.to_numpy()
        assert np.array_equal(got < 0, want < 0)
        pairs = set(zip(got[got >= 0].tolist(), want[want >= 0].tolist()))
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
        pd.testing.assert_frame_equal(s.detections.clusters, cluster_table(df, det.spacing_mm, ndim=2))


def test_cluster_ids_stay_with_their_clusters():
    """Rejecting every member of cluster #0 renumbered #1 to #0 under the
    reviewer; undo gives the dissolved cluster its id back; a cluster formed
    in review gets a new id; the autosave restores the same ids."""
    far = [(100, 100, 0.9), (110, 105, 0.9), (105, 115, 0.9),        # cluster 0
           (500, 500, 0.9), (510, 505, 0.9), (505, 515, 0.9),        # cluster 1
           (800, 800, 0.9), (810, 805, 0.9), (805, 815, 0.2)]        # two: a cluster once accepted
    s = ReviewSession(make_det(far))
    assert [cid(s, k) for k in (0, 3, 6)] == [0, 1, -1]
    s.reject([0, 1, 2])
    assert cid(s, 3) == 1 and list(s.detections.clusters.cluster_id) == [1]
    s.accept([8])  # 6, 7, 8 now form a cluster
    assert cid(s, 6) == cid(s, 8) == 2
    s.undo()
    s.undo()
    assert [cid(s, k) for k in (0, 3, 6)] == [0, 1, -1]
    s.redo()
    assert cid(s, 0) == -1 and cid(s, 3) == 1


def _reference_dbscan(pts, radius_mm, min_size):
    """Plain breadth-first DBSCAN, the textbook definition, as a reference."""
    from scipy.spatial import cKDTree

    n = len(pts)
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return labels
    neigh = cKDTree(pts).query_ball_point(pts, r=radius_mm)
    core = np.array([len(nb) >= min_size for nb in neigh])
    next_id = 0
    for i in range(n):
        if not core[i] or labels[i] != -1:
            continue
        labels[i] = next_id
        stack = [i]
        while stack:
            j = stack.pop()
            for q in neigh[j]:
                if labels[q] == -1:
                    labels[q] = next_id
                    if core[q]:
                        stack.append(q)
        next_id += 1
    return labels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("radius", [1.0, 4.0, 9.0])
def test_cluster_labels_equal_reference_dbscan(seed, radius):
    rng = np.random.default_rng(seed)
    pts = rng.random((700, 2)) * [100, 80]
    pts[:50] = pts[50:100] + rng.normal(0, 0.3, (50, 2))  # dense spots
    for min_size in (2, 3, 6):
        np.testing.assert_array_equal(cluster_calcifications(pts, radius_mm=radius, min_size=min_size),
                                      _reference_dbscan(pts, radius, min_size))
    p3 = np.column_stack([rng.integers(0, 5, 400).astype(float), rng.random((400, 2)) * 60])
    np.testing.assert_array_equal(cluster_calcifications(p3, radius_mm=radius, min_size=3),
                                  _reference_dbscan(p3, radius, 3))
    assert len(cluster_calcifications(np.zeros((0, 2)), radius_mm=radius, min_size=3)) == 0


def _brute_max(p):
    return float(np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)).max())


@pytest.mark.parametrize("kind", ["plane", "3d", "one_slice", "collinear", "duplicates"])
def test_max_pair_distance_equals_all_pairs(kind):
    rng = np.random.default_rng(11)
    if kind == "plane":
        p = rng.random((900, 2)) * 40
    elif kind == "3d":
        p = rng.random((900, 3)) * [5, 40, 40]
    elif kind == "one_slice":
        p = np.column_stack([np.full(900, 3.0), rng.random((900, 2)) * 40])
    elif kind == "collinear":
        t = rng.random(300) * 50
        p = np.column_stack([2 * t + 1, -t + 3])
    else:
        p = np.repeat(rng.random((40, 2)), 5, axis=0)
    assert max_pair_distance(p) == pytest.approx(_brute_max(p), rel=1e-12, abs=1e-12)
    assert max_pair_distance(p[:1]) == 0.0


def test_extra_columns_and_existing_review_labels_are_kept():
    det = make_det(TRIO)
    det.calcifications = det.calcifications.assign(
        elongation=np.arange(6) * 0.5, note=["a", "b", "c", "d", "e", "f"], morphology="punctate")
    s = ReviewSession(det)
    df = s.detections.calcifications
    assert list(df.columns) == calc_columns(2) + REVIEW_COLUMNS + ["elongation", "note"]
    assert (df.morphology == "punctate").all() and df.elongation.iloc[3] == 1.5
    new = s.add(300, 300)
    r = s.row(new)
    assert np.isnan(r["elongation"]) and r["note"] == "" and r["morphology"] == ""
    s.undo()
    pd.testing.assert_frame_equal(s.detections.calcifications, df)


# --------------------------------------------------------------------------- a new run of the image
def test_carry_over_onto_a_new_run():
    """Re-running detection keeps the review: decisions go to the nearest
    candidate of the new run within half a diameter (0.15 mm here, at least
    0.2 mm); accepted ones it does not find stay as added; rejected ones it no
    longer proposes go."""
    from napari_calc.core.review import carry_over

    s = ReviewSession(make_det(TRIO))
    s.accept([0])
    s.reject([1, 3])
    s.set_labels([2], morphology="punctate")
    s.set_labels([0], suspicion="suspicious")
    added = s.add(500, 500, morphology="amorphous")
    s.add(900, 900)
    # the new run: 0 moved by 1 px, 1 gone, 2 and 3 moved by 3 px (0.3 mm: too far for 3), a candidate
    # where 500,500 was added, nothing near 900,900, and two new ones
    new = make_det([(101, 100, 0.95), (110, 131, 0.6), (700, 703, 0.9), (501, 500, 0.7),
                    (300, 300, 0.5), (730, 700, 0.85)])
    det, summary = carry_over(s.detections.calcifications, new)
    c = det.calcifications
    assert summary == {"matched": 3, "kept_as_added": 1, "dropped": 2}
    assert list(c["status"]) == ["accepted", "candidate", "candidate", "accepted", "candidate",
                                 "candidate", "added"]
    assert c.loc[0, "suspicion"] == "suspicious" and c.loc[0, "annotator"] == ""
    assert c.loc[1, "morphology"] == "punctate"  # labels of a candidate follow it (1 px away)
    assert c.loc[3, "morphology"] == "amorphous"  # an added one the detector now finds: accepted
    assert c.loc[6, ["row", "col"]].tolist() == [900, 900]
    assert c.loc[6, "calc_id"] > max(s.detections.calcifications["calc_id"].max(), added)
    assert (c.loc[:5, ["row", "col", "score"]].to_numpy() == new.calcifications[["row", "col", "score"]]
            .to_numpy()).all()  # the new run's candidates are as it found them
    t = ReviewSession(det)
    assert t.row(int(c.loc[6, "calc_id"]))["status"] == "added" and t.row(0)["status"] == "accepted"
    # statuses stay what they became: the found added one is a detector row now, the kept one added
    assert c.loc[3, "created_at"] == "" and c.loc[6, "created_at"] != ""
    u = ReviewSession(det)
    u.reset([int(c.loc[3, "calc_id"]), int(c.loc[6, "calc_id"])])
    u.accept([int(c.loc[3, "calc_id"])])
    assert u.row(int(c.loc[3, "calc_id"]))["status"] == "accepted"
    assert u.row(int(c.loc[6, "calc_id"]))["status"] == "added"
    # a table that has the added calcification itself (a reopened export): it stays added
    again, _ = carry_over(s.detections.calcifications, t.detections)
    assert (again.calcifications["status"] == "added").sum() == 1
    # nothing reviewed: the new run as it is
    plain, summary = carry_over(make_det(TRIO).calcifications, new)
    assert summary == {"matched": 0, "kept_as_added": 0, "dropped": 0}
    assert (plain.calcifications["status"] == "candidate").all()


def test_carry_over_onto_a_table_that_already_carries_it_keeps_added_rows_added():
    """Carried over twice (the Detect panel carries a review over to a
    re-run, then a review panel on the layer carries its session over
    again): an accepted calcification the new run did not find was kept as
    added, and the second pass made it 'accepted' with the added row's score
    of 1, as if the detector had found it."""
    from napari_calc.core.review import carry_over

    s = ReviewSession(make_det(TRIO))
    s.accept([0])
    s.reject([1])
    new = make_det([(300, 300, 0.5)])  # finds neither
    once, first = carry_over(s.detections.calcifications, new)
    assert first == {"matched": 0, "kept_as_added": 1, "dropped": 1}
    twice, second = carry_over(s.detections.calcifications, once)
    assert second["kept_as_added"] == 0 and second["matched"] == 1
    c = twice.calcifications
    assert list(c["status"]) == ["candidate", "added"]
    pd.testing.assert_frame_equal(c, once.calcifications)


def test_carry_over_in_a_stack_needs_the_same_or_next_slice():
    from napari_calc.core.review import carry_over

    s = ReviewSession(make_det([(4, 100, 100, 0.9), (4, 300, 300, 0.9)], ndim=3))
    s.reject([0, 1])
    new = make_det([(5, 100, 100, 0.9), (7, 300, 300, 0.9)], ndim=3)
    det, summary = carry_over(s.detections.calcifications, new)
    assert summary == {"matched": 1, "kept_as_added": 0, "dropped": 1}
    assert list(det.calcifications["status"]) == ["rejected", "candidate"]


def test_clusters_keep_their_numbers_across_a_new_run():
    """A re-run numbers its clusters afresh (#1 became #0 when the order of
    the candidates changed); the review carried over names them after the
    clusters they were."""
    pts = [(100, 100, 0.9), (110, 105, 0.9), (105, 115, 0.9),
           (500, 500, 0.9), (510, 505, 0.9), (505, 515, 0.9)]
    s = ReviewSession(make_det(pts))
    assert [cid(s, k) for k in (0, 3)] == [0, 1]
    s.accept([4])
    rerun = make_det(pts[::-1])  # the same calcifications, found in the other order
    assert ReviewSession(rerun).row(0)["cluster_id"] == 0  # fresh: the (500, 500) group is #0 now
    t = ReviewSession.start_over(s.detections.calcifications, rerun)
    c = t.detections.calcifications
    assert set(c.loc[c.row >= 500, "cluster_id"]) == {1} and set(c.loc[c.row < 500, "cluster_id"]) == {0}
    assert t.carried_over == {"matched": 1, "kept_as_added": 0, "dropped": 0}
