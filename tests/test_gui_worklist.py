"""The "Review worklist" panel, for real in napari: image after image of a
batch folder, reviews autosaved there, reviewed tables written back."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

pytest.importorskip("napari")

from qtpy.QtCore import Qt  # noqa: E402

from napari_calc.core.batch import run_batch  # noqa: E402
from napari_calc.core.worklist import read_worklist  # noqa: E402
from napari_calc.plugin.viewer import open_worklist  # noqa: E402

from gui_helpers import press  # noqa: E402
from test_batch_support import write_tiff  # noqa: E402


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("gui_worklist")
    for i in range(3):
        write_tiff(root / "scans" / f"case{i + 1}.tif", 10 + i)
    assert run_batch([root / "scans"], root / "out", workers=1, formats=("csv", "json")).exit_code == 0
    return root


@pytest.fixture
def folder(batch, tmp_path):
    shutil.copytree(batch / "out", tmp_path / "out")
    return tmp_path / "out"


def _statuses(path) -> dict:
    df = pd.read_csv(path, keep_default_na=False)
    return dict(zip(df["calc_id"], df["status"]))


def _names(viewer):
    return sorted(lay.name for lay in viewer.layers)


def test_go_through_a_batch(make_napari_viewer, qtbot, folder):
    wl = read_worklist(folder)
    viewer, w = open_worklist(wl, viewer=make_napari_viewer())
    rv = w.review
    # the first image, its detections, reviewed with the autosave in the batch folder
    assert _names(viewer) == ["case1", "case1 calcifications", "case1 clusters"]
    assert rv.session is not None and rv.session.sidecar == wl.sidecar(wl.items[0])
    # opened, nothing decided yet: still to review
    assert w.summary.text().startswith("image 1 of 3 · 0 reviewed, 0 in progress, 3 to review")
    ids = rv.session.visible_ids()
    rv.session.accept(ids[:1])
    rv.session.reject(ids[1:2])
    # written back two seconds after the change, without leaving the image
    csv = wl.items[0].outputs["csv"]
    qtbot.waitUntil(lambda: _statuses(csv)[ids[0]] == "accepted", timeout=10_000)
    assert _statuses(csv)[ids[1]] == "rejected"

    # Shift-N on the canvas: the next image replaces this one
    press(qtbot, viewer, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier)
    assert _names(viewer) == ["case2", "case2 calcifications", "case2 clusters"]
    assert w.current == 1 and rv.session.sidecar == wl.sidecar(wl.items[1])
    assert "in progress" in w.table.item(0, 3).text()
    # finish this one: every candidate shown gets a decision
    rv.session.reject(rv.session.visible_ids())
    w.go(+1)  # leaving writes its tables at once
    assert set(_statuses(wl.items[1].outputs["csv"]).values()) <= {"rejected", "candidate"}
    assert w.table.item(1, 3).text().startswith("reviewed")
    assert w.current == 2

    # back to the first: its review is restored from the batch folder, and the
    # table written after the autosave is not taken for a newer edit
    w.open_index(0)
    assert _names(viewer) == ["case1", "case1 calcifications", "case1 clusters"]
    st = rv.session.detections.calcifications.set_index("calc_id")["status"]
    assert st[ids[0]] == "accepted" and st[ids[1]] == "rejected"
    assert "saved after the autosave" not in rv.autosave_label.text()
    assert "Restored review from" in rv.autosave_label.text()
    # Next to review skips the reviewed case2
    assert w.go(+1) == 2
    # with every other image reviewed, Next to review stays and says so
    rv.session.reject(rv.session.visible_ids())  # case3 done
    w.open_index(0)
    rv.session.accept(rv.session.visible_ids())
    assert w.go(+1) is None and w.current == 0
    assert "every image of the list is reviewed" in w.status.text()
    rv.session.undo()
    assert w.go(+1) is None and "only this one" in w.status.text()
    rv.session.redo()

    # the list opened again: the progress read from the autosaves (in a
    # worker thread) fills in, and the first image still to review opens
    w.review.detach()
    viewer2, w2 = open_worklist(read_worklist(folder), viewer=make_napari_viewer())
    assert w2.current == 0  # every image reviewed: the first
    qtbot.waitUntil(lambda: w2.table.item(1, 3).text().startswith("reviewed"), timeout=10_000)
    qtbot.waitUntil(lambda: "3 reviewed, 0 in progress, 0 to review" in w2.summary.text(), timeout=10_000)


def test_missing_image_and_reopening_the_list(make_napari_viewer, qtbot, folder, batch, tmp_path):
    moved = tmp_path / "case2.tif"
    shutil.copy(batch / "scans" / "case2.tif", moved)
    (batch / "scans" / "case2.tif").unlink()
    try:
        wl = read_worklist(folder)
        viewer, w = open_worklist(wl, viewer=make_napari_viewer())
        assert w.current == 0
        assert w.open_index(1) is None  # one line, and the current image stays
        assert "case2.tif: image not found" in w.status.text()
        assert w.current == 0 and _names(viewer)[0] == "case1"
        assert w.table.item(1, 3).text() == "cannot open"
        rv = w.review
        rv.session.accept(rv.session.visible_ids()[:2])
        csv = wl.items[0].outputs["csv"]
        before = csv.read_bytes()
        # napari closed before the tables were written: the next worklist writes them
        w._save_timer.stop()
        w._poll.stop()
        rv.detach()
        assert csv.read_bytes() == before
        viewer2, w2 = open_worklist(read_worklist(folder), viewer=make_napari_viewer())
        assert "wrote the tables of 1 review(s)" in w2.status.text()
        assert list(_statuses(csv).values()).count("accepted") == 2
        assert w2.current == 0  # still in progress: the first to review
    finally:
        shutil.copy(moved, batch / "scans" / "case2.tif")


def test_panel_from_the_plugin_menu(make_napari_viewer, qtbot, folder, tmp_path, monkeypatch):
    """Docked on its own (Plugins menu): a wrong folder is one line in the
    panel; the right one opens its first image, and asks for a name."""
    monkeypatch.delenv("NAPARI_CALC_ANNOTATOR", raising=False)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-calc", "Review worklist")
    assert w.load(tmp_path / "nothere") is None
    assert w.status.text().endswith("nothere: folder not found")
    assert w.load(folder) is not None
    assert "case1 calcifications" in _names(viewer)
    assert w.review.session.sidecar.parent == folder
    assert "Your name is not set" in w.status.text()
    w.review.annotator.value = "A. N. Other"
    assert "Your name is not set" not in w.status.text()


def test_cli_review_opens_the_start_image(make_napari_viewer, qtbot, folder, monkeypatch, capsys):
    import napari

    from napari_calc.cli import main

    (folder / "case3.done.json").write_text("{")  # an unusable marker: one line, the rest opens
    seen = {}
    monkeypatch.setattr(napari, "run", lambda *a, **k: seen.setdefault("viewer", napari.current_viewer()))
    # the CLI's viewer made by napari's test fixture (its own app model, closed
    # at the end): made bare, it registered napari's plugins into the shared
    # app model a second time after other tests had ("Command ... already
    # registered"), depending on which tests ran before
    monkeypatch.setattr(napari, "Viewer", make_napari_viewer)
    monkeypatch.delenv("NAPARI_CALC_ANNOTATOR", raising=False)
    assert main(["review", str(folder), "--start", "case2", "--annotator", "Dr Who"]) == 0
    viewer = seen["viewer"]
    assert _names(viewer) == ["case2", "case2 calcifications", "case2 clusters"]
    w = viewer.window.add_plugin_dock_widget("napari-calc", "Review worklist")[1]
    assert w.review.session.annotator == "Dr Who"
    assert "Your name is not set" not in w.status.text()
    w.review.session.accept(w.review.session.visible_ids()[:1])
    w.save_current()
    df = pd.read_csv(w.worklist.items[1].outputs["csv"], keep_default_na=False)
    assert list(df.loc[df["status"] == "accepted", "annotator"]) == ["Dr Who"]
    assert viewer.title.endswith(str(folder))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "case3.done.json: cannot be used" in err[0]


def test_a_review_carried_over_to_a_rerun_is_written(make_napari_viewer, qtbot, folder, batch):
    """A batch re-run with other parameters: opening the image carries the
    review over to the new candidates, and those go into the new tables."""
    from napari_calc.core.export import read_detections
    from napari_calc.core.review import ReviewSession

    wl = read_worklist(folder)
    it = wl.items[0]
    s = ReviewSession.open_or_create(read_detections(it.detections), wl.sidecar(it), fsync=False)
    top = s.visible_ids()[:2]
    s.accept(top)
    pos = s.detections.calcifications.set_index("calc_id").loc[top, ["row", "col"]].to_numpy()
    wl.save_reviewed(it, s.detections)
    s.close()
    assert run_batch([batch / "scans" / "case1.tif"], folder, workers=1, formats=("csv", "json"),
                     params={"threshold": 3.5}).exit_code == 0
    csv = it.outputs["csv"]
    assert set(_statuses(csv).values()) == {"candidate"}  # the new run's table

    viewer, w = open_worklist(read_worklist(folder), viewer=make_napari_viewer())
    assert w.current == 0
    qtbot.waitUntil(lambda: list(_statuses(csv).values()).count("accepted") == 2, timeout=10_000)
    df = pd.read_csv(csv, keep_default_na=False)
    got = df.loc[df["status"] == "accepted", ["row", "col"]].to_numpy()
    assert sorted(map(tuple, got)) == sorted(map(tuple, pos))


def test_progress_column_follows_every_decision(make_napari_viewer, qtbot, folder):
    """The review column changed on the first decision of each two-second
    save cycle only (and not after the save): it lagged behind the
    annotator. Every decision shows now; the tables are still written once
    things are quiet."""
    wl = read_worklist(folder)
    viewer, w = open_worklist(wl, viewer=make_napari_viewer())
    s = w.review.session
    ids = s.visible_ids()
    n = len(ids)
    assert n >= 3
    for k in range(2):  # two decisions within one save cycle
        s.accept(ids[k:k + 1])
        qtbot.waitUntil(lambda: w.table.item(0, 3).text() == f"in progress ({n - k - 1} left)", timeout=1_000)
    csv = wl.items[0].outputs["csv"]
    qtbot.waitUntil(lambda: _statuses(csv)[ids[1]] == "accepted", timeout=10_000)  # saved once quiet
    s.reject(ids[2:])  # after the save too
    qtbot.waitUntil(lambda: w.table.item(0, 3).text().startswith("reviewed"), timeout=1_000)
    assert "1 reviewed" in w.summary.text()


def test_panels_fit_a_1280x800_screen(make_napari_viewer, qtbot, folder, monkeypatch):
    """With the panels docked (as `napari-calc review` docks them), the
    window could not be made shorter than about 1000 px: a 1280x800 laptop
    showed its bottom off screen. On a short screen each panel scrolls now;
    on a tall one it keeps its full height."""
    from qtpy.QtCore import QRect
    from qtpy.QtGui import QScreen
    from qtpy.QtWidgets import QDockWidget, QScrollArea

    from napari_calc.plugin.viewer import DETECT_WIDGET, REVIEW_WIDGET, WORKLIST_WIDGET

    def docked(screen):
        # the screen the panels see (the test's Xvfb screen is 1600x1000)
        monkeypatch.setattr(QScreen, "availableGeometry", lambda self: QRect(0, 0, 1280, screen))
        viewer, w = open_worklist(read_worklist(folder), viewer=make_napari_viewer())
        qwin = viewer.window._qt_window
        ours = {t: d for d in qwin.findChildren(QDockWidget)
                for t in (DETECT_WIDGET, REVIEW_WIDGET, WORKLIST_WIDGET) if t in d.objectName()}
        assert len(ours) == 3
        return qwin, ours

    # a 1280x800 screen, less a task bar
    qwin, ours = docked(770)
    for d in ours.values():
        # the napari window on a 1280x800 screen, less its chrome, is ~700 px tall
        assert d.minimumSizeHint().height() <= 700, d.objectName()
    # and the window: the layer controls and list stack above the detect panel
    assert qwin.minimumSizeHint().height() <= 770
    qwin.resize(1280, 770)
    qtbot.waitUntil(lambda: qwin.height() == 770, timeout=2_000)
    assert qwin.width() == 1280

    # a 1920x1200 screen: the detect panel has the height of all its rows
    qwin, ours = docked(1170)
    detect = ours[DETECT_WIDGET]
    body = detect.widget().findChild(QScrollArea).widget()
    assert detect.widget().minimumSizeHint().height() >= body.minimumSizeHint().height()
    assert qwin.minimumSizeHint().height() <= 1170


def test_long_image_names_stay_on_one_line(make_napari_viewer, qtbot, folder):
    """A long image name wrapped inside a row one line high, cut off at the
    top and bottom; it is one line now, shortened in the middle (full name:
    the tooltip)."""
    viewer, w = open_worklist(read_worklist(folder), viewer=make_napari_viewer())
    assert not w.table.wordWrap() and w.table.textElideMode() == Qt.TextElideMode.ElideMiddle


def test_shift_n_and_shift_p_work_after_clicking_a_table_row(make_napari_viewer, qtbot, folder):
    """After a click on a row of the list the focus stays in the table,
    which took Shift-N and Shift-P for its keyboard search: nothing
    happened. The table passes them on now (its arrow keys and typing still
    walk and search its rows), and so do the Review panel's tables; with a
    button focused they work as before, and the folder box still types."""
    viewer, w = open_worklist(read_worklist(folder), viewer=make_napari_viewer())
    table = w.table
    assert w.current == 0
    rect = table.visualItemRect(table.item(2, 1))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    table.setFocus()
    shift = Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(table, Qt.Key.Key_N, shift)
    assert w.current == 1 and _names(viewer) == ["case2", "case2 calcifications", "case2 clusters"]
    qtbot.keyClick(table, Qt.Key.Key_P, shift)
    assert w.current == 0 and _names(viewer)[0] == "case1"

    table.setCurrentCell(0, 1)
    qtbot.keyClick(table, Qt.Key.Key_Down)  # the table's own keys still move through its rows
    assert table.currentRow() == 1
    qtbot.keyClicks(table, "case3")  # ... and typing still finds a row
    assert table.currentRow() == 2 and w.current == 0  # (a row is opened by a double-click only)

    # a candidate's row clicked in the Review panel: its keys and Shift-N work there
    rv = w.review
    calc = rv.calc_table
    rect = calc.visualRect(rv.calc_model.index(0, 0))
    qtbot.mouseClick(calc.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    calc.setFocus()
    cid = rv.current_id
    qtbot.keyClick(calc, Qt.Key.Key_A)
    assert rv.session.row(cid)["status"] == "accepted"
    qtbot.keyClick(calc, Qt.Key.Key_N, shift)
    assert w.current == 1 and _names(viewer)[0] == "case2"
    qtbot.keyClick(rv.calc_table, Qt.Key.Key_P, shift)
    assert w.current == 0

    # elsewhere in the panel: a button clicked last
    w.next_btn.setFocus()
    qtbot.keyClick(w.next_btn, Qt.Key.Key_N, shift)
    assert w.current == 1
    qtbot.keyClick(w.next_btn, Qt.Key.Key_P, shift)
    assert w.current == 0
    # typing a folder name is still typing
    w.folder.setFocus()
    w.folder.clear()
    qtbot.keyClicks(w.folder, "NP")
    assert w.folder.text() == "NP" and w.current == 0


def test_leaving_an_image_cleans_up_the_canvas_once(make_napari_viewer, qtbot, folder, monkeypatch):
    """Its three layers go in one batch: napari (0.9.2) cleans up its scene
    graph after each removal with a full garbage collection (0.24 s each in
    a test process), which ran three times per image."""
    import gc

    viewer, w = open_worklist(read_worklist(folder), viewer=make_napari_viewer())
    assert _names(viewer) == ["case1", "case1 calcifications", "case1 clusters"]
    removed, collections, real = [], [], gc.collect
    viewer.layers.events.removed.connect(lambda e: removed.append(e.value.name))
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(1) or real(*a))
    w._leave_current()
    assert sorted(removed) == ["case1", "case1 calcifications", "case1 clusters"] and len(viewer.layers) == 0
    assert len(collections) <= 1
