"""napari-calc's result layers as napari draws them (rendered under Xvfb)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("napari")

from napari_calc.core.columns import calc_columns, cluster_columns  # noqa: E402
from napari_calc.core.detections import Detections  # noqa: E402
from napari_calc.plugin.layers import show_detections, update_points_layer  # noqa: E402


def _dets(positions, spacing=0.1, shape=(200, 200)):
    """Candidates at ``positions`` ((row, col) or (slice, row, col)), score 0.9."""
    nd = len(shape)
    cols = calc_columns(nd)
    pos = np.asarray(positions, dtype=float)
    df = pd.DataFrame({c: np.zeros(len(pos)) for c in cols})
    df["calc_id"] = np.arange(len(pos))
    for k, name in enumerate(("slice", "row", "col")[3 - nd:]):
        df[name] = pos[:, k].astype(int)
    df["y_mm"], df["x_mm"] = df["row"] * spacing, df["col"] * spacing
    if nd == 3:
        df["z_mm"] = df["slice"] * 1.0
    df["diameter_mm"], df["score"], df["cluster_id"], df["status"] = 0.3, 0.9, -1, "candidate"
    clusters = pd.DataFrame({c: [] for c in cluster_columns(nd)})
    sp = (1.0, spacing, spacing) if nd == 3 else (spacing, spacing)
    return Detections(calcifications=df[cols], clusters=clusters, spacing_mm=sp, image_shape=shape)


def _lit(viewer, qtbot):
    """Pixels of the canvas brighter than the (black) image."""
    qtbot.wait(50)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    return int((shot[..., :3].max(axis=-1) > 60).sum())


def _hide_all(pts, det, hidden=True):
    """What the review panel's score threshold does (napari's ``shown`` is
    not honoured for 2-D points, so hidden ones are also made transparent)."""
    vis = np.full(len(det.calcifications), not hidden)
    update_points_layer(pts, det.calcifications, det.spacing_mm, det.ndim, data_changed=False, visible=vis)


@pytest.mark.parametrize("case", ["2d-threshold", "stack-empty-slice", "stack-threshold"])
def test_no_dot_at_the_image_corner_when_no_candidate_is_in_view(make_napari_viewer, qtbot, case):
    """In a stack, on a slice without candidates (or whose candidates are
    all below the score threshold), a white disc was drawn at the image's
    top-left corner: napari's placeholder point at the origin, enlarged to
    the layers' minimum screen size, looked like a marker. Hidden
    candidates of a 2-D image must not be drawn either."""
    nd = 2 if case.startswith("2d") else 3
    viewer = make_napari_viewer(show=True)
    shape = (200, 200) if nd == 2 else (8, 200, 200)
    img = viewer.add_image(np.zeros(shape, np.float32), scale=(0.1, 0.1) if nd == 2 else (1.0, 0.1, 0.1),
                           contrast_limits=(0, 1), name="img")
    det = _dets([(120, 80)] if nd == 2 else [(5, 120, 80)], shape=shape)
    pts, shp = show_detections(viewer, det, img)
    shp.visible = False
    if nd == 3:
        viewer.dims.set_current_step(0, 5)
    viewer.reset_view()
    assert _lit(viewer, qtbot) > 0  # the candidate's ring is drawn

    if case == "stack-empty-slice":
        viewer.dims.set_current_step(0, 3)
    else:
        _hide_all(pts, det)
    assert _lit(viewer, qtbot) == 0

    # the ring comes back, at its minimum screen size when zoomed far out
    if case == "stack-empty-slice":
        viewer.dims.set_current_step(0, 5)
    else:
        _hide_all(pts, det, hidden=False)
    cam = getattr(getattr(viewer, "scene", None), "camera", None) or viewer.camera  # napari >= 0.9: scene
    cam.zoom = cam.zoom / 20
    assert _lit(viewer, qtbot) > 0


def test_a_stack_slider_says_slice_and_results_share_the_axes(make_napari_viewer, tmp_path):
    """A tomosynthesis stack's slider was labelled "-3"."""
    from dicom_factory import make_series

    vol = (np.arange(5 * 32 * 40, dtype=np.uint16).reshape(5, 32, 40) % 3000)
    make_series(tmp_path / "dbt", vol, modality="MG")
    viewer = make_napari_viewer()
    img, = viewer.open(str(tmp_path / "dbt"), plugin="napari-calc")
    assert viewer.dims.axis_labels == ("slice", "row", "col")
    pts, shp = show_detections(viewer, _dets([(2, 10, 10)], shape=(5, 32, 40)), img)
    assert tuple(pts.axis_labels) == tuple(shp.axis_labels) == tuple(img.axis_labels)
    assert viewer.dims.axis_labels == ("slice", "row", "col")
