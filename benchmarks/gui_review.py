"""How the review panel scales: a 20,000-candidate Points layer in napari.

Run under a display (or Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/gui_review.py [--n 20000]

Prints, with medians over repeats: the time to show the result layers, the
latency of one review action (accept: session update + bulk push of
features/colours into the layer), of a threshold change, and of one redraw of
the canvas; and, for scale, the same accept done the naive way (setting one
point's colour at a time in a Python loop over all points).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import numpy as np
    import napari
    import pandas as pd
    from qtpy.QtWidgets import QApplication

    from napari_calc.core.columns import NO_CLUSTER, calc_columns
    from napari_calc.core.detect import detect
    from napari_calc.core.detections import Detections
    from napari_calc.plugin.layers import point_colors, show_detections
    from napari_calc.plugin.viewer import dock_panels

    rng = np.random.default_rng(0)
    n, shape, sp = args.n, (4096, 3328), (0.07, 0.07)
    rows, cols = rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)
    calcs = pd.DataFrame({
        "calc_id": np.arange(n), "row": rows, "col": cols, "y_mm": rows * sp[0], "x_mm": cols * sp[1],
        "diameter_mm": rng.uniform(0.1, 0.8, n), "contrast": rng.uniform(1, 50, n),
        "cnr": rng.uniform(0, 10, n), "score": rng.uniform(0, 1, n),
        "cluster_id": np.full(n, NO_CLUSTER), "status": ["candidate"] * n})[calc_columns(2)]
    empty = detect(np.zeros((64, 64), np.uint16), 0.07).clusters.iloc[:0]
    det = Detections(calcifications=calcs, clusters=empty, spacing_mm=sp, image_shape=shape,
                     params={"cluster_min_score": 2.0})  # no clustering: measure the layer, not scipy

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    _, review = dock_panels(viewer)
    image = viewer.add_image(np.zeros((512, 416), np.uint16), name="ff", scale=(0.56, 0.56),
                             units=("mm", "mm"))
    app.processEvents()

    t = time.perf_counter()
    pts, _ = show_detections(viewer, det, image)
    app.processEvents()
    t_show = time.perf_counter() - t
    s = review.session
    review.threshold.value = 0.0
    review._commit_threshold()
    app.processEvents()

    def med(fn):
        ts = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    ids = iter(range(n))
    t_accept = med(lambda: s.accept([next(ids)]))
    t_undo = med(lambda: s.undo())
    # the live part of the slider (the session's re-clustering follows on release)
    t_thr = med(lambda: setattr(review.threshold, "value", float(rng.uniform(0.2, 0.8))))

    def redraw():
        viewer.window._qt_viewer.canvas.native.repaint()
        app.processEvents()

    t_draw = med(redraw)

    def naive():
        fc = pts.border_color
        for i in range(n):  # what a per-point loop costs
            fc[i] = point_colors(calcs.iloc[i:i + 1])[0]
        pts.border_color = fc

    t_naive = med(naive) if args.repeat else float("nan")
    print(f"{n} candidates on a {shape[0]}x{shape[1]} image (napari {napari.__version__})")
    print(f"show result layers       {t_show * 1000:9.1f} ms")
    print(f"accept one (bulk sync)   {t_accept * 1000:9.1f} ms")
    print(f"undo                     {t_undo * 1000:9.1f} ms")
    print(f"threshold slider (live)  {t_thr * 1000:9.1f} ms")
    print(f"canvas redraw            {t_draw * 1000:9.1f} ms")
    print(f"naive per-point colours  {t_naive * 1000:9.1f} ms  ({t_naive / t_accept:.0f}x the bulk accept)")
    review.detach()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
