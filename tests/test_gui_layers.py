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


def _clustered(det, members):
    """``det`` with the candidates ``members`` (indices) in cluster 0 and
    its cluster table."""
    from napari_calc.core.cluster import cluster_table

    calcs = det.calcifications.copy()
    calcs.loc[list(members), "cluster_id"] = 0
    det.calcifications = calcs
    det.clusters = cluster_table(calcs, det.spacing_mm, ndim=det.ndim)
    return det


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


def test_a_stack_cluster_outline_is_on_every_slice_it_spans(make_napari_viewer, qtbot, tmp_path):
    """A tomosynthesis cluster's outline was drawn on its centroid's slice
    only, so it vanished while scrolling through the cluster's members."""
    import pandas as pd

    from napari_calc.core.export import read_detections
    from napari_calc.plugin.layers import detections_from_layers
    from napari_calc.plugin.writers import write_clusters_csv, write_detections

    viewer = make_napari_viewer(show=True)
    shape = (8, 200, 200)
    img = viewer.add_image(np.zeros(shape, np.float32), scale=(1.0, 0.1, 0.1), contrast_limits=(0, 1),
                           name="img", units=("mm",) * 3, axis_labels=("slice", "row", "col"))
    det = _clustered(_dets([(2, 100, 100), (4, 110, 95), (5, 105, 110), (7, 20, 20)], shape=shape), [0, 1, 2])
    pts, shp = show_detections(viewer, det, img)
    z = sorted(int(d[0, 0]) for d in shp.data)
    assert z == [2, 3, 4, 5]  # first to last member, none beyond
    assert all(np.all(d[:, 0] == d[0, 0]) for d in shp.data)
    assert list(shp.features["cluster_id"]) == [0] * 4 and len(set(shp.features["label"])) == 1

    pts.visible = False
    viewer.reset_view()
    for step, drawn in ((3, True), (5, True), (1, False), (6, False)):  # 3: no member there
        viewer.dims.set_current_step(0, step)
        assert (_lit(viewer, qtbot) > 0) == drawn, step

    # the layers still hold one cluster: rebuilt, saved, reopened
    back = detections_from_layers(pts, shp)
    assert len(back.clusters) == 1
    pd.testing.assert_frame_equal(back.clusters.reset_index(drop=True), det.clusters.reset_index(drop=True),
                                  check_dtype=False)
    out = write_detections(str(tmp_path / "s.detections.json"),
                           [pts.as_layer_data_tuple(), shp.as_layer_data_tuple()])
    assert len(read_detections(out[0]).clusters) == 1
    data, attrs, _ = shp.as_layer_data_tuple()
    csv, = write_clusters_csv(str(tmp_path / "s.clusters.csv"), data, attrs)
    assert len(pd.read_csv(csv)) == 1

    # a review edit that moves the cluster's last member redraws the span
    from napari_calc.plugin.layers import update_shapes_layer

    calcs = det.calcifications.copy()
    calcs.loc[2, "cluster_id"] = -1
    calcs.loc[3, "cluster_id"] = 0
    from napari_calc.core.cluster import cluster_table

    update_shapes_layer(shp, calcs, cluster_table(calcs, det.spacing_mm, ndim=3), det.spacing_mm, 3)
    assert sorted(int(d[0, 0]) for d in shp.data) == [2, 3, 4, 5, 6, 7]
    assert len(shp.features) == 6


def test_a_2d_cluster_has_one_outline(make_napari_viewer):
    viewer = make_napari_viewer()
    img = viewer.add_image(np.zeros((200, 200), np.float32), scale=(0.1, 0.1), name="img")
    det = _clustered(_dets([(100, 100), (110, 95), (105, 110)]), [0, 1, 2])
    pts, shp = show_detections(viewer, det, img)
    assert len(shp.data) == 1 and list(shp.features["cluster_id"]) == [0]


def test_no_dot_on_an_empty_slice_of_a_stack_opened_from_its_export(make_napari_viewer, qtbot, tmp_path):
    """Layers the plugin's reader makes from an export (not through
    show_detections) get the same guard once the review panel is on them."""
    from gui_helpers import dock_both

    from napari_calc.plugin.writers import write_detections

    shape = (8, 200, 200)
    det = _dets([(5, 120, 80)], shape=shape)
    viewer = make_napari_viewer(show=True)
    img = viewer.add_image(np.zeros(shape, np.float32), scale=(1.0, 0.1, 0.1), contrast_limits=(0, 1),
                           name="img", units=("mm",) * 3, axis_labels=("slice", "row", "col"))
    pts, shp = show_detections(viewer, det, img)
    out, = write_detections(str(tmp_path / "img.detections.json"), [pts.as_layer_data_tuple()])
    viewer.layers.remove(pts)
    viewer.layers.remove(shp)
    opened = viewer.open(out, plugin="napari-calc")
    pts = next(lay for lay in opened if type(lay).__name__ == "Points")
    for lay in opened:
        if lay is not pts:
            lay.visible = False
    _, review_w = dock_both(viewer)
    review_w.attach(pts)
    qtbot.wait(300)  # the panel's own moves of the view first
    viewer.dims.set_current_step(0, 5)
    viewer.reset_view()
    assert _lit(viewer, qtbot) > 0
    viewer.dims.set_current_step(0, 2)
    viewer.reset_view()
    assert pts.canvas_size_limits[0] == 0  # no point in view: no minimum size
    assert _lit(viewer, qtbot) == 0


def test_a_stack_cluster_without_usable_slices_keeps_one_outline():
    """Every cluster row gets an outline (its features row is the cluster
    table's): members without a slice, or no members, fall back to the
    cluster's own slice, or slice 0."""
    from napari_calc.plugin.layers import cluster_features, cluster_outlines, clusters_of_features

    det = _clustered(_dets([(2, 100, 100), (4, 110, 95), (5, 105, 110)], shape=(8, 200, 200)), [0, 1, 2])
    calcs = det.calcifications.astype({"slice": float})
    calcs["slice"] = np.nan
    clusters = det.clusters.copy()
    clusters["slice"] = 3.6
    polys, rows = cluster_outlines(calcs, clusters, det.spacing_mm, 3)
    assert [int(p[0, 0]) for p in polys] == [4] and list(rows) == [0]
    clusters["slice"] = np.nan
    polys, rows = cluster_outlines(calcs.iloc[:0], clusters, det.spacing_mm, 3)
    assert [int(p[0, 0]) for p in polys] == [0]
    assert len(clusters_of_features(cluster_features(clusters, 3, rows))) == 1


def test_is_calc_layer_sees_through_the_plugin_proxy(make_napari_viewer):
    """napari hands plugins a proxy for ``viewer.layers[i]``; its type name
    is not "Points", so the calcifications layer was not recognised there."""
    from napari.utils._proxies import PublicOnlyProxy

    from napari_calc.plugin.layers import is_calc_layer

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((200, 200), np.float32), name="img", scale=(0.1, 0.1))
    pts, shp = show_detections(viewer, _dets([(50, 60), (120, 40)]), image)
    assert is_calc_layer(pts) and is_calc_layer(PublicOnlyProxy(pts))
    assert not is_calc_layer(shp) and not is_calc_layer(PublicOnlyProxy(shp))
    assert not is_calc_layer(PublicOnlyProxy(viewer.add_points(np.zeros((1, 2)), name="plain")))
