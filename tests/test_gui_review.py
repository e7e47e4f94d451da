"""napari GUI tests of the "Review calcifications" panel (real napari, Xvfb).

Keys are real key events sent to the napari canvas, so they go through
napari's keymap machinery exactly as a user's would.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from gui_helpers import dock_both, press, run_detection  # noqa: E402
from qtpy.QtCore import QPoint, Qt  # noqa: E402

from napari_calc.core.columns import calc_columns  # noqa: E402
from napari_calc.core.review import REVIEW_COLUMNS, ReviewSession  # noqa: E402
from napari_calc.plugin.layers import STATUS_COLORS  # noqa: E402

LAYER = "sample-mammogram calcifications"


def _open_and_detect(viewer, qtbot, project_dir):
    detect_w, review_w = dock_both(viewer)
    review_w.set_project_dir(project_dir)
    (image,) = viewer.open_sample("napari-calc", "sample-mammogram")
    run_detection(qtbot, detect_w, image)
    qtbot.waitUntil(lambda: review_w.session is not None and review_w.layer is viewer.layers[LAYER])
    return detect_w, review_w, image


def _cam(viewer):
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _status(layer, calc_id):
    f = layer.features
    return f.loc[f["calc_id"] == calc_id, "status"].item()


def _pos(layer, calc_id):
    return int(np.flatnonzero(layer.features["calc_id"].to_numpy() == calc_id)[0])


@pytest.fixture
def reviewing(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    detect_w, review_w, image = _open_and_detect(viewer, qtbot, tmp_path)
    return viewer, detect_w, review_w, viewer.layers[LAYER]


def test_keyboard_accept_reject_undo_redo_with_layer_in_sync(qtbot, reviewing, tmp_path):
    viewer, _, review_w, pts = reviewing
    s = review_w.session
    assert list(pts.features.columns) == calc_columns(2) + REVIEW_COLUMNS
    review_w.annotator.value = "ada"
    first = s.next_id(None)
    second = s.next_id(first)

    press(qtbot, viewer, Qt.Key.Key_N)  # go to the first (highest score) candidate
    assert review_w.current_id == first
    p = _pos(pts, first)
    assert pts.selected_data == {p}
    # the view is centred on it (world = pixel * scale)
    np.testing.assert_allclose(_cam(viewer).center[-2:], pts.data_to_world(pts.data[p])[-2:], atol=1e-6)

    data_before = pts.data
    press(qtbot, viewer, Qt.Key.Key_A)  # accept -> next
    assert _status(pts, first) == "accepted"
    assert pts.data is data_before  # a status change does not rebuild the points (bulk update only)
    assert pts.features.loc[p, "annotator"] == "ada" and pts.features.loc[p, "reviewed_at"]
    np.testing.assert_allclose(pts.border_color[p], STATUS_COLORS["accepted"])
    assert review_w.current_id == second

    press(qtbot, viewer, Qt.Key.Key_R)  # reject
    assert _status(pts, second) == "rejected"
    np.testing.assert_allclose(pts.border_color[_pos(pts, second)][:3], STATUS_COLORS["rejected"][:3])

    press(qtbot, viewer, Qt.Key.Key_U)  # undo the reject
    assert _status(pts, second) == "candidate"
    assert _status(pts, first) == "accepted"
    press(qtbot, viewer, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert _status(pts, second) == "rejected"  # redone
    press(qtbot, viewer, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo again
    assert _status(pts, second) == "candidate"
    # features and session agree row for row
    np.testing.assert_array_equal(pts.features["status"].to_numpy(),
                                  s.detections.calcifications["status"].to_numpy())

    # the shortcuts also work while the image layer is the active one (viewer keymap)
    viewer.layers.selection.active = viewer.layers["sample-mammogram"]
    review_w.go_to(second)
    press(qtbot, viewer, Qt.Key.Key_A)
    assert _status(pts, second) == "accepted"
    # P goes back
    press(qtbot, viewer, Qt.Key.Key_P)
    assert review_w.current_id == second
    # every action is in the autosave journal
    assert review_w.session.sidecar is not None and review_w.session.sidecar.parent == tmp_path
    assert len(review_w.session.history) >= 5


def test_navigation_past_the_ends_says_so(qtbot, reviewing):
    viewer, _, review_w, pts = reviewing
    s = review_w.session
    last = s.next_id(None, direction=-1)
    review_w.go_to(last)
    press(qtbot, viewer, Qt.Key.Key_N)
    assert review_w.current_id == last and "no next calcification" in viewer.status


def test_delete_without_a_current_candidate_only_shows_it(qtbot, reviewing):
    """Delete with nothing current removed the first candidate unseen (an
    accepted one too); like accept and reject it now shows it first."""
    viewer, _, review_w, pts = reviewing
    n = len(pts.data)
    assert review_w.current_id is None
    press(qtbot, viewer, Qt.Key.Key_Delete)
    assert len(pts.data) == n and review_w.current_id is not None
    press(qtbot, viewer, Qt.Key.Key_Delete)
    assert len(pts.data) == n - 1


def test_apply_labels_to_cluster_keeps_what_is_not_chosen(qtbot, reviewing):
    """Applying 'grouped' to a cluster cleared each member's morphology and flag."""
    viewer, _, review_w, pts = reviewing
    s = review_w.session
    cid = s.next_cluster(None)
    a, b = (int(x) for x in s.cluster_members(cid)[:2])
    s.set_labels([a], morphology="fine pleomorphic", suspicion="suspicious")
    review_w.go_to_cluster(cid)
    review_w.morphology.value = ""
    review_w.suspicion.value = ""
    review_w.distribution.value = "grouped"
    review_w.label_cluster_btn.clicked()
    assert s.row(a)["morphology"] == "fine pleomorphic" and s.row(a)["suspicion"] == "suspicious"
    assert s.row(a)["distribution"] == s.row(b)["distribution"] == "grouped"


def test_an_unusable_autosave_file_is_named_as_such(qtbot, reviewing):
    """A corrupt (or locked, or read-only) autosave file: the panel said
    'this image has no file'. It names the problem, and the file is kept."""
    viewer, _, review_w, pts = reviewing
    sidecar = review_w.session.sidecar
    review_w.detach()
    sidecar.write_text("garbage\n")
    review_w.attach(pts)
    text = review_w.autosave_label.text()
    assert "could not use the autosave file" in text and "has no file" not in text
    assert sidecar.read_text() == "garbage\n" and review_w.session.sidecar is None


def test_a_layer_that_cannot_be_reviewed_is_named_not_a_traceback(qtbot, reviewing):
    """A status the review does not know (a layer edited by hand): the
    fallback session raised out of the signal handler, a bare traceback."""
    viewer, _, review_w, pts = reviewing
    sidecar = review_w.session.sidecar
    review_w.detach()
    sidecar.unlink()  # nothing to restore: the layer's own table is reviewed
    f = pts.features.copy()
    f.loc[0, "status"] = "maybe"
    pts.features = f
    review_w.attach(pts)  # no exception
    assert review_w.session is None
    assert "cannot review" in review_w.info.text() and "maybe" in review_w.info.text()
    assert LAYER in review_w.info.text()


def test_switching_project_folders_keeps_the_review_on_screen(qtbot, reviewing, tmp_path):
    """Folder A, accept; folder B, reject and label; back to A: A's older
    review replaced B's decisions on screen. The review under way moves."""
    viewer, _, review_w, pts = reviewing
    s = review_w.session
    a, b, c = (int(x) for x in s.detections.calcifications.calc_id[:3])
    s.accept([a])
    other = tmp_path / "B"
    other.mkdir()
    review_w.set_project_dir(other)
    review_w.session.reject([b])
    review_w.session.set_labels([c], morphology="punctate")
    review_w.set_project_dir(tmp_path)  # back to A, which has an older review of this image
    t = review_w.session
    assert t.row(a)["status"] == "accepted" and t.row(b)["status"] == "rejected"
    assert t.row(c)["morphology"] == "punctate" and "moved here" in review_w.autosave_label.text()
    assert t.backup is not None and t.backup.exists()  # A's older review, kept
    assert _status(pts, b) == "rejected"


def test_switching_project_folders_keeps_the_undo_history(qtbot, reviewing, tmp_path):
    """The review moved, but its undo history did not: Undo was greyed out
    after choosing another folder, and its autosave held a snapshot only."""
    viewer, _, review_w, pts = reviewing
    s = review_w.session
    a, b = (int(x) for x in s.detections.calcifications.calc_id[:2])
    s.accept([a])
    s.reject([b])
    other = tmp_path / "B"
    other.mkdir()
    review_w.set_project_dir(other)
    t = review_w.session
    assert t.sidecar.parent == other and t.can_undo and review_w.btns["undo"].enabled
    assert "undo history" in review_w.autosave_label.text()
    assert str(t.sidecar) in review_w.autosave_label.text()
    press(qtbot, viewer, Qt.Key.Key_U)
    assert _status(pts, b) == "candidate" and t.row(a)["status"] == "accepted"
    # what was saved in B restores with the same history (redo included)
    review_w.detach()
    back = ReviewSession.restore(other / t.sidecar.name, read_only=True)
    assert back.row(b)["status"] == "candidate" and back.can_undo and back.can_redo
    assert [h["op"] for h in back.history][-3:] == ["accept", "reject", "undo"]


def test_delete_key_and_next_cluster(qtbot, reviewing):
    viewer, _, review_w, pts = reviewing
    s = review_w.session
    n = len(pts.data)
    press(qtbot, viewer, Qt.Key.Key_N)
    victim = review_w.current_id
    press(qtbot, viewer, Qt.Key.Key_Delete)
    assert len(pts.data) == n - 1 == len(s.detections.calcifications)
    assert victim not in pts.features["calc_id"].to_numpy()
    press(qtbot, viewer, Qt.Key.Key_U)
    assert len(pts.data) == n and victim in pts.features["calc_id"].to_numpy()

    if len(s.detections.clusters):
        press(qtbot, viewer, Qt.Key.Key_C)
        cid = review_w.current_cluster
        assert cid == s.next_cluster(None)
        row = s.detections.clusters.set_index("cluster_id").loc[cid]
        world = pts.data_to_world(np.array([row["row"], row["col"]]))
        np.testing.assert_allclose(_cam(viewer).center[-2:], world[-2:], atol=1e-6)


def test_click_adds_missed_calcification(qtbot, reviewing):
    viewer, _, review_w, pts = reviewing
    s = review_w.session
    n = len(s.detections.calcifications)
    # centre the view on a known pixel and click in the middle of the canvas
    target = np.array([600.0, 300.0])
    _cam(viewer).center = tuple(pts.data_to_world(target)[-2:])
    _cam(viewer).zoom = 20
    qtbot.mouseClick(review_w.add_btn.native, Qt.MouseButton.LeftButton)
    assert pts.mode == "add"
    canvas = viewer.window._qt_viewer.canvas.native
    centre = QPoint(canvas.width() // 2, canvas.height() // 2)
    qtbot.mouseMove(canvas, centre)
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=centre)
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=centre)
    qtbot.waitUntil(lambda: len(s.detections.calcifications) == n + 1, timeout=5000)
    new = s.detections.calcifications.iloc[-1]
    assert new["status"] == "added"
    # where napari says the cursor was, in pixels
    clicked = np.asarray(pts.world_to_data(viewer.cursor.position))[-2:]
    assert abs(new["row"] - clicked[0]) <= 0.5 + 1e-9 and abs(new["col"] - clicked[1]) <= 0.5 + 1e-9
    assert np.hypot(*(clicked - target)) < 150  # and near where we aimed
    assert len(pts.data) == n + 1 and pts.features["status"].iloc[-1] == "added"
    np.testing.assert_allclose(pts.border_color[-1], STATUS_COLORS["added"])
    press(qtbot, viewer, Qt.Key.Key_U)  # adding is undoable too
    assert len(pts.data) == n


def test_threshold_slider_labels_and_table_navigation(qtbot, reviewing):
    viewer, _, review_w, pts = reviewing
    s = review_w.session
    review_w.threshold.value = 0.9
    scores = pts.features["score"].to_numpy()
    hidden = scores < 0.9
    assert np.all(pts.border_color[hidden, 3] == 0) and np.all(pts.border_color[~hidden, 3] > 0)
    qtbot.waitUntil(lambda: s.threshold == pytest.approx(0.9), timeout=3000)
    assert review_w.calc_model.rowCount() == int((~hidden).sum())

    # clicking a table row centres the view on that candidate
    table = review_w.calc_table
    row = min(2, review_w.calc_model.rowCount() - 1)
    rect = table.visualRect(review_w.calc_model.index(row, 0))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    cid = int(review_w.calc_model.value(row, "calc_id"))
    assert review_w.current_id == cid
    p = _pos(pts, cid)
    np.testing.assert_allclose(_cam(viewer).center[-2:], pts.data_to_world(pts.data[p])[-2:], atol=1e-6)
    assert _cam(viewer).zoom >= 10  # zoomed in (screen px per mm)

    # labels go to the current candidate
    review_w.morphology.value = "fine pleomorphic"
    review_w.suspicion.value = "suspicious"
    assert pts.features.loc[p, "morphology"] == "fine pleomorphic"
    assert pts.features.loc[p, "suspicion"] == "suspicious"
    press(qtbot, viewer, Qt.Key.Key_U)
    assert pts.features.loc[p, "suspicion"] == ""


def test_review_restored_after_closing_and_reopening_the_viewer(qtbot, make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    _, review_w, _ = _open_and_detect(viewer, qtbot, tmp_path)
    pts = viewer.layers[LAYER]
    press(qtbot, viewer, Qt.Key.Key_N)
    a = review_w.current_id
    press(qtbot, viewer, Qt.Key.Key_A)
    b = review_w.current_id
    press(qtbot, viewer, Qt.Key.Key_R)
    review_w.go_to(a)
    review_w.morphology.value = "punctate"
    saved = pts.features.copy()
    sidecar = review_w.session.sidecar
    assert sidecar.exists()
    viewer.close()

    viewer2 = make_napari_viewer()
    _, review2, _ = _open_and_detect(viewer2, qtbot, tmp_path)
    pts2 = viewer2.layers[LAYER]
    assert review2.session.sidecar == sidecar
    assert "Restored" in review2.autosave_label.text()
    assert _status(pts2, a) == "accepted" and _status(pts2, b) == "rejected"
    assert pts2.features.loc[_pos(pts2, a), "morphology"] == "punctate"
    for col in ["calc_id", "status", "morphology", "annotator"]:
        np.testing.assert_array_equal(pts2.features[col].to_numpy(), saved[col].to_numpy())
    # and undo still reaches back into the previous sitting
    review2.do("undo")
    assert pts2.features.loc[_pos(pts2, a), "morphology"] == ""


def test_rerunning_detection_keeps_the_review(qtbot, reviewing, tmp_path):
    """A re-run with other parameters replaced every decision by 'candidate'
    (the only trace: '(kept as .bak)', and a second re-run overwrote that).
    Now the decisions follow their calcifications to the new run, the panel
    says so, and every earlier autosave is kept."""
    viewer, detect_w, review_w, pts = reviewing
    image = viewer.layers["sample-mammogram"]
    s = review_w.session
    best = s.detections.calcifications.sort_values("score", ascending=False)
    a, b = (int(v) for v in best["calc_id"].iloc[:2])  # strong ones: found again at a higher threshold
    review_w.go_to(a)
    press(qtbot, viewer, Qt.Key.Key_A)
    review_w.go_to(b)
    press(qtbot, viewer, Qt.Key.Key_R)
    review_w.go_to(b)  # R moved on to the next one
    review_w.morphology.value = "punctate"
    assert s.row(b)["morphology"] == "punctate"
    where = {k: tuple(s.detections.calcifications.loc[s.detections.calcifications.calc_id == k,
                                                       ["row", "col"]].iloc[0]) for k in (a, b)}
    n_before = len(pts.data)
    sidecar = s.sidecar
    for run in (1, 2):
        detect_w.params["threshold"].value = 6.0 + run  # another run: fewer candidates
        run_detection(qtbot, detect_w, image)
        qtbot.waitUntil(lambda: review_w.session is not None and review_w.session is not s)
        s = review_w.session
        f = pts.features
        assert 0 < len(pts.data) < n_before and len(f) == len(s.detections.calcifications)
        for k, status in ((a, "accepted"), (b, "rejected")):
            row = f[(f["row"] == where[k][0]) & (f["col"] == where[k][1])]
            assert list(row["status"]) == [status]
        assert f.loc[f["status"] == "rejected", "morphology"].tolist() == ["punctate"]
        assert "review carried over to the new run: 2 decision(s)" in review_w.autosave_label.text()
        bak = sidecar.name + (".bak" if run == 1 else ".bak.2")
        assert bak in review_w.autosave_label.text() and (tmp_path / bak).exists()
    assert s.sidecar == sidecar and sidecar.exists()


def test_rerunning_detection_keeps_the_review_with_the_panel_elsewhere(qtbot, reviewing):
    """Reviewed, then the review panel left the layer (another layer chosen,
    or closed) and detection re-run on the image: every decision on the
    layer was replaced by 'candidate'. Now the Detect panel carries the
    review over itself and says so."""
    viewer, detect_w, review_w, pts = reviewing
    image = viewer.layers["sample-mammogram"]
    s = review_w.session
    best = s.detections.calcifications.sort_values("score", ascending=False)
    a, b = (int(v) for v in best["calc_id"].iloc[:2])
    s.accept([a])
    s.reject([b])
    calcs = s.detections.calcifications
    where = {k: tuple(calcs.loc[calcs.calc_id == k, ["row", "col"]].iloc[0]) for k in (a, b)}
    review_w.detach()
    assert review_w.layer is None
    detect_w.params["threshold"].value = 7.0
    run_detection(qtbot, detect_w, image)
    f = pts.features
    for k, status in ((a, "accepted"), (b, "rejected")):
        row = f[(f["row"] == where[k][0]) & (f["col"] == where[k][1])]
        assert list(row["status"]) == [status]
    assert (f["status"] != "candidate").sum() == 2
    assert "The review (2 decisions) is carried over: 2 matched" in detect_w.status.value


def test_an_accepted_calcification_a_rerun_misses_stays_added_once(qtbot, reviewing):
    """With the review panel on the layer, the Detect panel and the panel
    both carried the review over: the accepted calcification the new run
    missed came back 'accepted' (with the added row's score of 1), as if
    the detector had found it. One carry-over now, by the panel."""
    viewer, detect_w, review_w, pts = reviewing
    image = viewer.layers["sample-mammogram"]
    s = review_w.session
    weak = s.detections.calcifications.sort_values("score").iloc[0]
    s.accept([int(weak.calc_id)])
    detect_w.params["threshold"].value = 8.0  # too high for it
    run_detection(qtbot, detect_w, image)
    qtbot.waitUntil(lambda: review_w.session is not None and review_w.session is not s)
    f = pts.features
    here = f[((f["y_mm"] - weak.y_mm).abs() < 0.3) & ((f["x_mm"] - weak.x_mm).abs() < 0.3)]
    assert list(here["status"]) == ["added"]
    assert "carried over" not in detect_w.status.value  # the review panel did it, and says so
    assert "1 accepted calcification(s) it did not find kept as added" in review_w.autosave_label.text()


def test_removing_the_layer_closes_the_review(qtbot, reviewing):
    viewer, _, review_w, pts = reviewing
    session = review_w.session
    press(qtbot, viewer, Qt.Key.Key_N)
    press(qtbot, viewer, Qt.Key.Key_A)
    viewer.layers.remove(pts)
    assert review_w.session is None and review_w.layer is None
    assert session.closed  # autosave file closed, complete
    press(qtbot, viewer, Qt.Key.Key_A)  # keys are harmless without a review
    assert review_w.calc_model.rowCount() == 0
    assert "accepted" not in review_w.info.text()  # not the counts of the review that is gone


def test_reviewed_layers_save_and_reopen_through_the_plugin(qtbot, reviewing, tmp_path):
    import pandas as pd

    viewer, _, review_w, pts = reviewing
    press(qtbot, viewer, Qt.Key.Key_N)
    a = review_w.current_id
    press(qtbot, viewer, Qt.Key.Key_A)
    b = review_w.current_id
    press(qtbot, viewer, Qt.Key.Key_R)
    viewer.layers.selection = {pts, viewer.layers["sample-mammogram clusters"]}
    out = tmp_path / "export" / "mammo.calcifications.csv"
    out.parent.mkdir()
    written = viewer.layers.save(str(out), selected=True, plugin="napari-calc")
    assert str(out) in written
    df = pd.read_csv(out)
    assert list(df.columns[: len(calc_columns(2))]) == calc_columns(2)
    assert df.set_index("calc_id").loc[a, "status"] == "accepted"
    assert df.set_index("calc_id").loc[b, "status"] == "rejected"
    layers = viewer.open(str(out), plugin="napari-calc")
    reopened = [lay for lay in layers if type(lay).__name__ == "Points"][0]
    assert tuple(reopened.scale) == pytest.approx(tuple(pts.scale))
    np.testing.assert_array_equal(reopened.features["status"].to_numpy(), pts.features["status"].to_numpy())


def test_clusters_table_and_c_key_walk_tied_scores_in_the_same_order(qtbot):
    """Sorted by score (highest first), the table listed tied clusters in
    reverse id order while C / Shift-C walked them in id order."""
    from types import SimpleNamespace

    import pandas as pd

    from napari_calc.plugin.review_widget import DataFrameModel

    df = pd.DataFrame({"cluster_id": [0, 1, 2, 3, 4], "score": [0.5, 0.9, 0.9, 0.2, 0.9]})
    m = DataFrameModel(["cluster_id", "score"])
    m.set_frame(df)
    m.set_sort("score", Qt.DescendingOrder)
    shown = [int(m.data(m.index(r, 0))) for r in range(len(df))]
    fake = SimpleNamespace(detections=SimpleNamespace(clusters=df))
    walk = [ReviewSession.next_cluster(fake, None)]
    while (nxt := ReviewSession.next_cluster(fake, walk[-1])) is not None:
        walk.append(nxt)
    assert shown == walk == [1, 2, 4, 0, 3]
    m.set_sort("score", Qt.AscendingOrder)
    assert [int(m.data(m.index(r, 0))) for r in range(len(df))] == [3, 0, 1, 2, 4]


def test_labels_after_going_to_a_cluster_do_not_edit_the_candidate_left_behind(qtbot, reviewing):
    """N, set a morphology, C to another cluster: the label boxes still
    edited the candidate left behind (off screen), and "Apply labels to
    cluster" copied its morphology to every member of the new cluster."""
    viewer, _, review_w, pts = reviewing
    s = review_w.session
    if len(s.detections.clusters) < 2:
        pytest.skip("needs two clusters")
    press(qtbot, viewer, Qt.Key.Key_N)
    first = review_w.current_id
    review_w.morphology.value = "punctate"
    assert s.row(first)["morphology"] == "punctate"
    own = int(s.row(first)["cluster_id"])
    press(qtbot, viewer, Qt.Key.Key_C)
    if review_w.current_cluster == own:
        press(qtbot, viewer, Qt.Key.Key_C)
    cl = review_w.current_cluster
    assert cl is not None and cl != own
    assert review_w.current_id is None and review_w.morphology.value == ""
    n_actions = len(s.history)
    review_w.distribution.value = "segmental"
    assert len(s.history) == n_actions and s.row(first)["distribution"] == ""
    review_w.label_cluster_btn.clicked()
    for m in s.cluster_members(cl):
        assert s.row(int(m))["distribution"] == "segmental"
        assert s.row(int(m))["morphology"] == ""  # not the candidate's left behind
    press(qtbot, viewer, Qt.Key.Key_N)  # N goes on from the candidate left
    assert review_w.current_id == s.next_id(first)


def test_shortcuts_work_after_clicking_a_table_row(qtbot, reviewing):
    """A click on a row left the focus in the table, which took A, R, N,
    Space, U... for itself (keyboard search): nothing happened. The table
    passes them on now; the arrow keys still walk its rows, and typing in
    the panel's edit boxes is still typing."""
    viewer, _, review_w, pts = reviewing
    s = review_w.session
    table = review_w.calc_table
    rect = table.visualRect(review_w.calc_model.index(1, 0))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    cid = int(review_w.calc_model.value(1, "calc_id"))
    assert review_w.current_id == cid
    table.setFocus()

    def key(k, mod=Qt.KeyboardModifier.NoModifier):
        qtbot.keyClick(table, k, mod)

    key(Qt.Key.Key_A)
    assert _status(pts, cid) == "accepted" and review_w.current_id == s.next_id(cid)
    second = review_w.current_id
    key(Qt.Key.Key_R)
    assert _status(pts, second) == "rejected"
    key(Qt.Key.Key_U)
    assert _status(pts, second) == "candidate"
    key(Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert _status(pts, cid) == "candidate"
    key(Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    assert _status(pts, cid) == "accepted"
    review_w.go_to(cid)
    key(Qt.Key.Key_Space)
    assert review_w.current_id == s.next_id(cid)
    key(Qt.Key.Key_Backspace)
    assert review_w.current_id == cid
    if len(s.detections.clusters):
        key(Qt.Key.Key_C)
        assert review_w.current_cluster == s.next_cluster(None)
    review_w.go_to(cid)
    key(Qt.Key.Key_Down)  # the table's own keys still move through its rows
    assert review_w.current_id == int(review_w.calc_model.value(table.currentIndex().row(), "calc_id")) != cid

    n = len(s.history)
    edit = review_w.annotator.native
    edit.setFocus()
    qtbot.keyClicks(edit, "Ran")
    assert review_w.annotator.value == "Ran" and len(s.history) == n


def test_undo_and_redo_go_to_the_candidate_they_change(qtbot, reviewing):
    """Undo changed a decision back somewhere off screen and left the panel
    where it was: the candidate undone (and redone) is the current one now,
    selected in the table and centred in the view."""
    viewer, _, review_w, pts = reviewing
    s = review_w.session
    press(qtbot, viewer, Qt.Key.Key_N)
    first = review_w.current_id
    press(qtbot, viewer, Qt.Key.Key_A)
    assert _status(pts, first) == "accepted" and review_w.current_id != first
    far = s.next_id(None, direction=-1)  # the last one: elsewhere in the table
    review_w.go_to(far)

    def shown(cid):
        assert review_w.current_id == cid
        p = _pos(pts, cid)
        assert pts.selected_data == {p}
        np.testing.assert_allclose(_cam(viewer).center[-2:], pts.data_to_world(pts.data[p])[-2:], atol=1e-6)
        rows = review_w.calc_table.selectionModel().selectedRows()
        assert [int(review_w.calc_model.value(r.row(), "calc_id")) for r in rows] == [cid]

    press(qtbot, viewer, Qt.Key.Key_U)
    assert _status(pts, first) == "candidate"
    shown(first)
    review_w.go_to(far)
    press(qtbot, viewer, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    assert _status(pts, first) == "accepted"
    shown(first)
    # undoing a delete brings the candidate back as the current one
    review_w.go_to(far)
    press(qtbot, viewer, Qt.Key.Key_Delete)
    assert far not in pts.features["calc_id"].to_numpy()
    review_w.go_to(first)
    press(qtbot, viewer, Qt.Key.Key_U)
    shown(far)


def test_headers_and_layer_name_are_not_cut_off(qtbot, make_napari_viewer):
    """At the panel's default width the headers were cut ("scor" under the
    sort arrow, "clust", "exte") and the layer combo showed
    "sample-mammogram calcificatio". Each header has the room Qt says its
    text and sort arrow need; the layer name shows in full, and one longer
    than the panel is shortened in the middle, with its end kept."""
    from qtpy.QtCore import QEvent
    from qtpy.QtCore import Qt as _Qt
    from qtpy.QtGui import QHelpEvent
    from qtpy.QtWidgets import QApplication

    from napari_calc.plugin._elide import shown_text

    viewer = make_napari_viewer()
    detect_w, review_w = dock_both(viewer)
    (image,) = viewer.open_sample("napari-calc", "sample-mammogram")
    run_detection(qtbot, detect_w, image)
    qtbot.waitUntil(lambda: review_w.session is not None)
    qtbot.wait(50)
    for table, model in ((review_w.calc_table, review_w.calc_model), (review_w.cluster_table,
                                                                      review_w.cluster_model)):
        hdr = table.horizontalHeader()
        for i in range(model.columnCount()):
            name = model.headerData(i, _Qt.Orientation.Horizontal)
            assert hdr.sectionSize(i) >= hdr.sectionSizeHint(i), name
    combo = review_w.layer_combo.native
    assert shown_text(combo) == combo.currentText() == LAYER

    image.name = "Calc-Training_P_00005_RIGHT_CC_" + "and_a_much_longer_name_" * 4
    run_detection(qtbot, detect_w, image)
    long = f"{image.name} calcifications"
    qtbot.waitUntil(lambda: combo.currentText() == long, timeout=5_000)
    shown = shown_text(combo)
    assert "…" in shown and shown.startswith("Calc-") and shown.endswith("calcifications")
    QApplication.sendEvent(combo, QHelpEvent(QEvent.Type.ToolTip, QPoint(5, 5), combo.mapToGlobal(QPoint(5, 5))))
    assert long in combo.toolTip()  # what hovering shows


def _unwrapped(obj):
    """The layer behind napari's PublicOnlyProxy (the panel may hold either)."""
    return getattr(obj, "__wrapped__", obj)


def test_renaming_another_calcifications_layer_shows_at_once(qtbot, reviewing):
    """A calcifications layer that is not under review, renamed in the
    layer list, kept its old name in the panel's layer combo until the
    list next changed (only the reviewed layer's renames were followed).
    The combo lists the new name at once, and the review stays where it is."""
    viewer, detect_w, review_w, pts = reviewing
    image = viewer.layers["sample-mammogram"]
    second = viewer.add_image(image.data, name="second view", scale=image.scale, units=image.units,
                              metadata=image.metadata)
    run_detection(qtbot, detect_w, second)
    qtbot.waitUntil(lambda: review_w.session is not None
                    and review_w.layer is viewer.layers["second view calcifications"], timeout=10_000)
    s, reviewed = review_w.session, review_w.layer
    combo = review_w.layer_combo.native

    def names():
        return [combo.itemText(i) for i in range(combo.count())]

    assert LAYER in names()
    pts.name = "first view calcifications"  # pts is not under review
    assert "first view calcifications" in names() and LAYER not in names()
    assert review_w.layer is reviewed and review_w.session is s and not s.closed
    assert combo.currentText() == "second view calcifications"
    combo.setCurrentIndex(names().index("first view calcifications"))  # and it can be chosen by it
    qtbot.waitUntil(lambda: _unwrapped(review_w.layer) is pts, timeout=5_000)


def test_renaming_the_reviewed_layer_keeps_the_review(qtbot, reviewing):
    """Renamed in the layer list, the layer under review dropped out of the
    panel's layer combo at the next change of the layer list (a layer added
    or removed): the combo went blank and the panel let go of the review.
    The panel stays on the same layer under its new name, with its current
    candidate and undo history."""
    viewer, _, review_w, pts = reviewing
    s = review_w.session
    combo = review_w.layer_combo.native
    press(qtbot, viewer, Qt.Key.Key_N)
    first = review_w.current_id
    press(qtbot, viewer, Qt.Key.Key_A)
    current = review_w.current_id
    assert _status(pts, first) == "accepted" and current != first

    pts.name = "my calcifications"  # what the layer list does on a rename
    extra = viewer.add_points(np.zeros((1, 2)), name="marks")  # the layer list changes
    assert _unwrapped(review_w.layer) is pts and review_w.session is s and not s.closed
    viewer.layers.remove(extra)
    assert _unwrapped(review_w.layer) is pts and review_w.session is s and not s.closed
    assert _unwrapped(review_w.layer_combo.value) is pts and combo.currentText() == "my calcifications"
    pts.name = "mine"  # the combo shows a new name at once, not at the next change of the list
    assert combo.currentText() == "mine" and _unwrapped(review_w.layer_combo.value) is pts
    assert review_w.current_id == current and s.can_undo
    press(qtbot, viewer, Qt.Key.Key_U)  # the undo history is the same
    assert _status(pts, first) == "candidate" and review_w.current_id == first
    press(qtbot, viewer, Qt.Key.Key_R)  # and the keys still act on the layer
    assert _status(pts, first) == "rejected"

    # the clusters and image layers renamed too: the review goes on with them
    shapes = review_w.shapes
    assert shapes is not None
    shapes.name = "my clusters"
    viewer.layers["sample-mammogram"].name = "my image"
    viewer.layers.remove(viewer.add_points(np.zeros((1, 2)), name="marks"))
    assert _unwrapped(review_w.layer) is pts and review_w.session is s
    assert _unwrapped(review_w.shapes) is shapes and combo.currentText() == "mine"
    n_clusters = len(s.detections.clusters)
    if n_clusters:
        press(qtbot, viewer, Qt.Key.Key_C)
        assert review_w.current_cluster == s.next_cluster(None)
    # opened again on the renamed layers (as a change of project folder
    # does), the panel finds the renamed clusters layer, and the autosave
    sidecar = s.sidecar
    review_w.attach(pts)
    assert _unwrapped(review_w.shapes) is shapes and review_w.session.sidecar == sidecar
    assert len(review_w.session.detections.clusters) == n_clusters
    assert review_w.session.row(first)["status"] == "rejected"  # restored from its autosave
