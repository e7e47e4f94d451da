"""Make the README screenshots of napari with both napari-calc panels in use.

Run under a display (or Xvfb)::

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/screenshots.py [--out docs/images]

Writes ``napari-calc-detect.png`` (after a detection on the built-in sample)
and ``napari-calc-review.png`` (reviewing a cluster: candidates accepted and
rejected with the keyboard actions, one selected and centred). Both are
grabs of the whole napari window.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _wait(app, cond, timeout=120.0):
    t0 = time.time()
    while not cond():
        app.processEvents()
        time.sleep(0.01)
        if time.time() - t0 > timeout:
            raise TimeoutError("timed out")


def _settle(app, seconds=0.5):
    try:  # close notification toasts (e.g. the PyQt5 deprecation notice)
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for w in app.allWidgets():
            if isinstance(w, NapariQtNotification):
                w.close()
    except Exception:
        pass
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.01)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "images"))
    ap.add_argument("--width", type=int, default=1800)
    ap.add_argument("--height", type=int, default=1150)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import warnings

    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_calc.plugin.viewer import dock_panels

    viewer = napari.Viewer(title="napari-calc", show=True)
    qwin = viewer.window._qt_window
    qwin.resize(args.width, args.height)
    detect_w, review_w = dock_panels(viewer)
    viewer.open_sample("napari-calc", "sample-mammogram")
    app = QApplication.instance()
    _settle(app)

    detect_w.run()
    _wait(app, lambda: detect_w.worker is None)
    _settle(app, 1.0)
    viewer.reset_view()
    _settle(app, 0.5)
    p1 = out / "napari-calc-detect.png"
    viewer.screenshot(path=str(p1), canvas_only=False, flash=False)
    print(p1)

    # review: go to the best cluster, triage a few candidates with the key actions
    import tempfile

    review_w.set_project_dir(tempfile.mkdtemp(prefix="napari-calc-review-"))
    review_w.do("next_cluster")
    _settle(app, 0.3)
    s = review_w.session
    cl = review_w.current_cluster
    members = list(s.cluster_members(cl)) if cl is not None else []
    for k, cid in enumerate(members[:6]):
        review_w.go_to(int(cid))
        review_w.do("reject" if k == 2 else "accept")
        _settle(app, 0.1)
    if members:
        review_w.go_to(int(members[min(6, len(members) - 1)]))
        review_w.morphology.value = "fine pleomorphic"
        review_w.suspicion.value = "suspicious"
        review_w._centre_on(review_w.layer.data[int(
            (s.detections.calcifications["calc_id"] == review_w.current_id).to_numpy().argmax())],
            field_mm=14.0)
    _settle(app, 1.0)
    p2 = out / "napari-calc-review.png"
    viewer.screenshot(path=str(p2), canvas_only=False, flash=False)
    print(p2)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
