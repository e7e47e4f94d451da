"""Detections <-> napari layers.

Calcifications become a Points layer:

- ``data`` in pixel coordinates, ``(row, col)`` or ``(slice, row, col)``,
  with the layer's ``scale`` = pixel spacing in mm and ``units`` = mm, so
  points sit on the image whatever its physical size;
- ``features`` = the public calcification columns in contract order
  (:func:`napari_calc.core.columns.calc_columns`), then any review columns;
- ``size`` = diameter in data pixels (kept visible when zoomed out by
  ``canvas_size_limits``), drawn as rings so the calcification stays visible;
- colour (of the ring = the point's border): candidates by score
  (yellow -> red), accepted green, rejected grey, added cyan; computed for
  all points at once (vectorised).

Clusters become a Shapes layer of convex-hull outlines (padded by the
calcification radius), labelled ``"n=5, 8.3 mm"``; in a stack a cluster has
an outline (and a features row) on every slice from its first to its last
member (:func:`cluster_outlines`; :func:`clusters_of_features` gives the
table back, one row per cluster).

Both carry ``metadata["napari_calc"]`` = ``{"kind", "spacing_mm",
"image_metadata", "params", "source_layer", "image_shape"}``.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import pandas as pd

from ..core.columns import NO_CLUSTER, calc_columns, cluster_columns
from ..core.detections import Detections

__all__ = [
    "CALC_SUFFIX",
    "CLUSTER_SUFFIX",
    "STATUS_COLORS",
    "calc_layer_name",
    "cluster_layer_name",
    "points_coords",
    "point_colors",
    "point_sizes",
    "calc_features",
    "points_layer_kwargs",
    "cluster_outlines",
    "clusters_of_features",
    "hide_placeholder_point",
    "cluster_features",
    "shapes_layer_kwargs",
    "update_points_layer",
    "update_shapes_layer",
    "show_detections",
    "detections_from_layers",
    "find_result_layers",
    "layer_spacing",
    "is_calc_layer",
]

CALC_SUFFIX = " calcifications"
CLUSTER_SUFFIX = " clusters"

#: RGBA per review status (candidates are coloured by score instead).
STATUS_COLORS = {
    "accepted": (0.15, 0.95, 0.25, 1.0),
    "rejected": (0.55, 0.55, 0.60, 0.55),
    "added": (0.0, 0.85, 1.0, 1.0),
}
#: Candidate colour ramp by score, low -> high.
SCORE_RAMP = np.array([
    [1.00, 1.00, 0.35, 1.0],   # pale yellow
    [1.00, 0.60, 0.00, 1.0],   # orange
    [1.00, 0.10, 0.35, 1.0],   # red-magenta
])
#: Points are discs with a transparent face and a coloured border (a ring
#: that stays a ring when clamped by ``canvas_size_limits``, unlike the
#: "ring" symbol whose line vanishes when small).
FACE_COLOR = "transparent"
BORDER_WIDTH = 0.22
#: Points never draw smaller / larger than this on screen (pixels).
CANVAS_SIZE_LIMITS = (10, 80)
#: Ring size = diameter x this, so the ring surrounds the calcification.
RING_FACTOR = 1.8
CLUSTER_COLOR = "#ffbf00"
#: napari axis names of our layers: a stack's slider says "slice" (it
#: said "-3"), and the status bar names the axes.
AXIS_LABELS = ("slice", "row", "col")


def axis_labels(ndim: int) -> tuple[str, ...]:
    """:data:`AXIS_LABELS` of a ``ndim``-D layer (2: row, col; 3: slice, row, col)."""
    return AXIS_LABELS[-int(ndim):]


def calc_layer_name(image_name: str) -> str:
    """Name of the calcifications layer of an image layer."""
    return f"{image_name}{CALC_SUFFIX}"


def cluster_layer_name(image_name: str) -> str:
    """Name of the clusters layer of an image layer."""
    return f"{image_name}{CLUSTER_SUFFIX}"


def _meta(layer) -> dict:
    md = getattr(layer, "metadata", None) or {}
    return md.get("napari_calc") or {}


def is_calc_layer(layer) -> bool:
    """True for a Points layer holding napari-calc calcifications (also
    behind the proxy napari hands plugins for ``viewer.layers[i]``)."""
    kind = type(getattr(layer, "__wrapped__", layer)).__name__
    return kind == "Points" and _meta(layer).get("kind") == "calcifications"


def layer_spacing(layer) -> tuple[tuple[float, ...] | None, str]:
    """Pixel spacing of an image layer in mm, and where it came from.

    Returns
    -------
    spacing : tuple of float or None
        One value per image axis, or None when the layer has no physical
        scale.
    source : str
        ``"metadata"`` (read by napari-calc), ``"scale"`` (the layer's scale
        is in mm), or ``"none"``.
    """
    md = _meta(layer)
    sp = md.get("spacing_mm")
    nd = layer.ndim
    if sp is not None:
        sp = tuple(float(s) for s in sp)
        if len(sp) == 2 and nd == 3:
            sp = (1.0,) + sp
        return sp[-nd:], "metadata"
    units = [str(u) for u in getattr(layer, "units", ())]
    scale = tuple(float(s) for s in layer.scale)
    if units and all(u in ("mm", "millimeter") for u in units[-2:]):
        return scale, "scale"
    if units and all(u in ("um", "micrometer", "µm") for u in units[-2:]):
        return tuple(s / 1000.0 for s in scale), "scale"
    return None, "none"


# --------------------------------------------------------------------------
# Points
# --------------------------------------------------------------------------
def points_coords(calcs: pd.DataFrame, ndim: int) -> np.ndarray:
    """``(N, 2)`` (row, col) or ``(N, 3)`` (slice, row, col) float coordinates."""
    cols = ["slice", "row", "col"] if ndim == 3 else ["row", "col"]
    if len(calcs) == 0:
        return np.zeros((0, ndim), dtype=float)
    return calcs[cols].to_numpy(dtype=float)


def _ramp(values: np.ndarray) -> np.ndarray:
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=float), nan=0.0), 0.0, 1.0)
    pos = v * (len(SCORE_RAMP) - 1)
    i0 = np.minimum(np.floor(pos).astype(int), len(SCORE_RAMP) - 2)
    t = (pos - i0)[:, None]
    return SCORE_RAMP[i0] * (1 - t) + SCORE_RAMP[i0 + 1] * t


def point_colors(calcs: pd.DataFrame, color_by: str = "status", visible=None) -> np.ndarray:
    """RGBA per calcification (vectorised); the Points layer's ``border_color``.

    Parameters
    ----------
    calcs : DataFrame
        With ``score`` and ``status``.
    color_by : {"status", "score"}
        ``"status"``: reviewed points by status, candidates by score;
        ``"score"``: everything by score.
    visible : array of bool, optional
        Points not visible get alpha 0 (napari's ``shown`` is not honoured
        for 2-D points in 2-D views in every napari version).
    """
    n = len(calcs)
    if n == 0:
        return np.zeros((0, 4))
    rgba = _ramp(calcs["score"].to_numpy(dtype=float))
    if color_by == "status":
        status = calcs["status"].astype(str).to_numpy()
        for name, col in STATUS_COLORS.items():
            rgba[status == name] = col
    if visible is not None:
        rgba[~np.asarray(visible, dtype=bool), 3] = 0.0
    return rgba


def point_sizes(calcs: pd.DataFrame, spacing_mm) -> np.ndarray:
    """Ring diameter in data pixels from ``diameter_mm``."""
    px = float(min(spacing_mm[-2:]))
    d = np.nan_to_num(calcs["diameter_mm"].to_numpy(dtype=float), nan=0.3) if len(calcs) else np.zeros(0)
    return np.maximum(d / px * RING_FACTOR, 1.0)


def calc_features(calcs: pd.DataFrame, ndim: int) -> pd.DataFrame:
    """Features table: contract columns in order, then any other columns."""
    cols = calc_columns(ndim)
    rest = [c for c in calcs.columns if c not in cols]
    return calcs[cols + rest].reset_index(drop=True)


def _result_meta(kind, det: Detections, source_layer: str | None, run: str | None = None) -> dict:
    return {"napari_calc": {
        "run": run or _run_id(det),
        "kind": kind,
        "spacing_mm": tuple(float(s) for s in det.spacing_mm),
        "image_metadata": dict(det.metadata or {}),
        "params": dict(det.params or {}),
        "source_layer": source_layer,
        "image_shape": tuple(int(s) for s in det.image_shape),
    }}


def _run_id(det: Detections | None = None) -> str:
    """A fresh id for one detection run (its two result layers share it)."""
    import uuid

    return uuid.uuid4().hex


def points_layer_kwargs(det: Detections, *, name: str, source_layer: str | None = None,
                        translate=None, calcs: pd.DataFrame | None = None, run: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``viewer.add_points`` / ``Points(...)``."""
    nd = det.ndim
    calcs = det.calcifications if calcs is None else calcs
    kw = dict(
        data=points_coords(calcs, nd),
        ndim=nd,
        features=calc_features(calcs, nd),
        size=point_sizes(calcs, det.spacing_mm),
        face_color=FACE_COLOR,
        border_width=BORDER_WIDTH,
        border_width_is_relative=True,
        symbol="disc",
        canvas_size_limits=CANVAS_SIZE_LIMITS,
        scale=tuple(det.spacing_mm),
        units=("mm",) * nd,
        axis_labels=axis_labels(nd),
        name=name,
        metadata=_result_meta("calcifications", det, source_layer, run),
        blending="translucent_no_depth",
    )
    if len(calcs):  # napari refuses an empty colour array (no findings is a normal result)
        kw["border_color"] = point_colors(calcs)
    if translate is not None:
        kw["translate"] = tuple(translate)
    return kw


def _changed_rows(old: pd.DataFrame, new: pd.DataFrame):
    """Rows and columns that differ between two tables of the same shape and
    columns (vectorised, NaN == NaN), or (None, None) when they cannot be
    compared."""
    if len(old) != len(new) or list(old.columns) != list(new.columns):
        return None, None
    changed = np.zeros(len(new), dtype=bool)
    cols = []
    for c in new.columns:
        a, b = old[c].to_numpy(), new[c].to_numpy()
        try:
            neq = a != b
            if a.dtype.kind == "f" or b.dtype.kind == "f":
                neq &= ~(pd.isna(a) & pd.isna(b))
        except (TypeError, ValueError):
            return None, None
        neq = np.asarray(neq, dtype=bool)
        if neq.any():
            cols.append(c)
            changed |= neq
    return np.flatnonzero(changed), cols


def update_points_layer(layer, calcs: pd.DataFrame, spacing_mm, ndim: int, *,
                        data_changed: bool = True, color_by: str = "status", visible=None) -> None:
    """Put ``calcs`` into an existing Points layer, in bulk.

    ``data_changed=False`` (status or label edits): coordinates and sizes
    are kept, and when only a few rows changed (the usual review action)
    just those rows of ``features`` and colours are rewritten in place,
    followed by one redraw, so a 20,000-point layer stays responsive.
    Otherwise everything is replaced with vectorised assignments.
    """
    feats = calc_features(calcs, ndim)
    n = len(calcs)
    vis = np.ones(n, dtype=bool) if visible is None else np.asarray(visible, dtype=bool)
    if data_changed or len(layer.data) != n:
        layer.selected_data = set()
        layer.data = points_coords(calcs, ndim)
        layer.size = point_sizes(calcs, spacing_mm)
    else:
        old = layer.features
        rows, cols = _changed_rows(old, feats)
        bc = layer.border_color
        shown_same = len(layer.shown) == n and np.array_equal(layer.shown, vis)
        if rows is not None and shown_same and len(rows) <= max(50, n // 20) and bc.shape == (n, 4):
            if len(rows):
                for c in cols:  # in place, changed columns only (keeps dtypes)
                    col = old[c].to_numpy(copy=True)
                    col[rows] = feats[c].to_numpy()[rows]
                    old[c] = col
                bc[rows] = point_colors(calcs.iloc[rows], color_by, vis[rows])
                layer.refresh()
            return
    layer.features = feats
    if n:  # an empty colour array makes napari warn and reset the colours
        layer.border_color = point_colors(calcs, color_by, vis)
    if len(layer.shown) != n or not np.array_equal(layer.shown, vis):
        layer.shown = vis


# --------------------------------------------------------------------------
# Clusters
# --------------------------------------------------------------------------
def _hull(points: np.ndarray, pad: float) -> np.ndarray:
    """Convex hull (ordered vertices) of 2-D points, each padded by a disc."""
    ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ring = np.stack([np.sin(ang), np.cos(ang)], axis=1) * pad
    cloud = (points[:, None, :] + ring[None, :, :]).reshape(-1, 2)
    try:
        from scipy.spatial import ConvexHull

        hull = ConvexHull(cloud)
        return cloud[hull.vertices]
    except Exception:  # degenerate: all points identical
        c = points.mean(axis=0)
        return c + ring


def cluster_outlines(calcs: pd.DataFrame, clusters: pd.DataFrame, spacing_mm,
                     ndim: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The clusters' outlines in pixel coordinates, and the row of
    ``clusters`` each belongs to.

    The convex hull of the member calcifications, padded by a disc. A
    cluster without members in ``calcs`` (a cluster table opened without its
    calcification table) gets a circle of diameter ``max_extent_mm`` around
    its centroid. 2-D: one ``(k, 2)`` (row, col) outline per cluster. 3-D:
    ``(k, 3)`` outlines, one on every slice from the cluster's first to its
    last member (napari draws a shape only on the slice all its vertices
    are on: one outline on the centroid's slice vanished while scrolling
    through the cluster); on the centroid's slice for a cluster without
    members.
    """
    polys, rows = [], []
    pad_mm = 0.6
    row_mm, col_mm = (float(s) for s in spacing_mm[-2:])
    px = min(row_mm, col_mm)
    cid = calcs["cluster_id"].to_numpy() if len(calcs) else np.zeros(0, dtype=int)
    rc = calcs[["row", "col"]].to_numpy(float) if len(calcs) else np.zeros((0, 2))
    sl = calcs["slice"].to_numpy(float) if ndim == 3 and len(calcs) else np.zeros(0)
    for k, (_, cl) in enumerate(clusters.iterrows()):
        mine = cid == cl["cluster_id"]
        members = rc[mine]
        if len(members) == 0:
            ext = pd.to_numeric(pd.Series([cl.get("max_extent_mm")]), errors="coerce").iloc[0]
            r_mm = max(float(ext) / 2 if np.isfinite(ext) else 0.0, pad_mm)
            ang = np.linspace(0, 2 * np.pi, 32, endpoint=False)
            poly = np.column_stack([float(cl["row"]) + np.sin(ang) * r_mm / row_mm,
                                    float(cl["col"]) + np.cos(ang) * r_mm / col_mm])
        else:
            poly = _hull(members, pad_mm / px)
        if ndim != 3:
            polys.append(poly)
            rows.append(k)
            continue
        zs = sl[mine][np.isfinite(sl[mine])]
        if not len(zs):  # no members (or no slice for them): the centroid's slice
            centre = pd.to_numeric(pd.Series([cl.get("slice")]), errors="coerce").iloc[0]
            zs = np.array([centre if np.isfinite(centre) else 0.0])
        # every cluster keeps at least one outline: its features row is the cluster table's
        z0, z1 = int(round(zs.min())), int(round(zs.max()))
        for z in range(z0, z1 + 1):
            polys.append(np.column_stack([np.full(len(poly), float(z)), poly]))
            rows.append(k)
    return polys, np.asarray(rows, dtype=np.intp)


def cluster_features(clusters: pd.DataFrame, ndim: int, rows=None) -> pd.DataFrame:
    """Cluster columns in contract order, plus a ``label`` ("n=5, 8.3 mm");
    with ``rows`` (:func:`cluster_outlines`), one row per outline."""
    cols = cluster_columns(ndim)
    feats = clusters[[c for c in cols if c in clusters.columns]].reset_index(drop=True).copy()
    if len(feats):
        n = feats["n_calcifications"].to_numpy()
        ext = feats["max_extent_mm"].to_numpy(dtype=float)
        feats["label"] = [f"#{int(i)}: n={int(a)}, {b:.1f} mm"
                          for i, a, b in zip(feats["cluster_id"], n, ext)]
    else:
        feats["label"] = pd.Series([], dtype=object)
    if rows is not None:
        feats = feats.iloc[np.asarray(rows, dtype=np.intp)].reset_index(drop=True)
    return feats


def clusters_of_features(features) -> pd.DataFrame:
    """The cluster table a clusters layer's ``features`` hold: one row per
    cluster (a stack's cluster has an outline, and so a row, on each of
    its slices; the first is kept)."""
    feats = pd.DataFrame(features).reset_index(drop=True)
    if "cluster_id" in feats.columns and len(feats):
        feats = feats[~feats["cluster_id"].duplicated()].reset_index(drop=True)
    return feats


# Cluster labels: a saturated orange at full layer opacity stays legible on
# bright tissue and on the dark background alike (light yellow at napari's
# default shapes opacity of 0.7 faded into bright tissue).
_TEXT = {"string": "{label}", "color": "#ff7b00", "size": 12, "anchor": "upper_left"}
CLUSTER_OPACITY = 1.0


def shapes_layer_kwargs(det: Detections, *, name: str, source_layer: str | None = None,
                        translate=None, calcs=None, clusters=None, run: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``viewer.add_shapes`` / ``Shapes(...)``."""
    nd = det.ndim
    calcs = det.calcifications if calcs is None else calcs
    clusters = det.clusters if clusters is None else clusters
    polys, rows = cluster_outlines(calcs, clusters, det.spacing_mm, nd)
    kw = dict(
        data=polys,
        ndim=nd,
        shape_type="polygon",
        features=cluster_features(clusters, nd, rows),
        edge_color=CLUSTER_COLOR,
        face_color="transparent",
        edge_width=0.4,
        opacity=CLUSTER_OPACITY,
        text=dict(_TEXT),
        scale=tuple(det.spacing_mm),
        units=("mm",) * nd,
        axis_labels=axis_labels(nd),
        name=name,
        metadata=_result_meta("clusters", det, source_layer, run),
    )
    if translate is not None:
        kw["translate"] = tuple(translate)
    return kw


def update_shapes_layer(layer, calcs: pd.DataFrame, clusters: pd.DataFrame, spacing_mm, ndim: int) -> None:
    """Replace the outlines and features of an existing clusters layer."""
    polys, rows = cluster_outlines(calcs, clusters, spacing_mm, ndim)
    feats = cluster_features(clusters, ndim, rows)
    layer.selected_data = set()
    if len(layer.data):
        layer.data = []
    if polys:
        layer.add(polys, shape_type="polygon", edge_color=CLUSTER_COLOR, face_color="transparent",
                  edge_width=layer.current_edge_width)
    layer.features = feats
    if getattr(layer.text, "string", None) is None or not layer.text.visible:
        layer.text = dict(_TEXT)
    layer.refresh()


# --------------------------------------------------------------------------
# Viewer level
# --------------------------------------------------------------------------
def find_result_layers(viewer, image_name: str):
    """The existing (points, shapes) result layers of an image, or None."""
    pts = shp = None
    for lay in viewer.layers:
        md = _meta(lay)
        if lay.name == calc_layer_name(image_name) and md.get("kind") == "calcifications":
            pts = lay
        elif lay.name == cluster_layer_name(image_name) and md.get("kind") == "clusters":
            shp = lay
    return pts, shp


def show_detections(viewer, det: Detections, image_layer=None, *, image_name: str | None = None):
    """Add the result layers of ``det`` to ``viewer``, or update them in place.

    Re-running on the same image replaces the data of its
    ``"<image> calcifications"`` / ``"<image> clusters"`` layers, so layers
    never pile up.

    Returns
    -------
    (Points, Shapes)
    """
    from napari.layers import Points, Shapes

    name = image_name or (image_layer.name if image_layer is not None else "image")
    translate = tuple(image_layer.translate) if image_layer is not None else None
    pts, shp = find_result_layers(viewer, name)
    nd = det.ndim
    run = _run_id()
    if shp is None:
        shp = viewer.add_layer(Shapes(**shapes_layer_kwargs(det, name=cluster_layer_name(name),
                                                            source_layer=name, translate=translate,
                                                            run=run)))
    else:
        shp.scale = tuple(det.spacing_mm)
        tracked = (shp.metadata.get("napari_calc") or {}).get("_zoom_tracked", False)
        shp.metadata = _result_meta("clusters", det, name, run)
        shp.metadata["napari_calc"]["_zoom_tracked"] = tracked
        update_shapes_layer(shp, det.calcifications, det.clusters, det.spacing_mm, nd)
    _keep_edges_visible(viewer, shp)
    if pts is None:
        pts = viewer.add_layer(Points(**points_layer_kwargs(det, name=calc_layer_name(name),
                                                            source_layer=name, translate=translate,
                                                            run=run)))
    else:
        pts.scale = tuple(det.spacing_mm)
        pts.metadata = _result_meta("calcifications", det, name, run)
        update_points_layer(pts, det.calcifications, det.spacing_mm, nd)
        pts.events.features()  # tell listeners (review panel) the table changed
    hide_placeholder_point(pts)
    if image_layer is not None and image_layer in viewer.layers:
        # layers kept from an earlier image of that name (removed, opened
        # again) lie under the new one: results go back on top, on its grid
        for lay in (shp, pts):
            if translate is not None:
                lay.translate = translate
        j = viewer.layers.index(image_layer)
        if viewer.layers.index(shp) < j or viewer.layers.index(pts) < j:
            for lay in (shp, pts):  # to the top, points over outlines, as when first added
                viewer.layers.move(viewer.layers.index(lay), len(viewer.layers))
    return pts, shp


#: Points layers whose placeholder point is kept hidden (see hide_placeholder_point).
_PLACEHOLDER_GUARDED: weakref.WeakSet = weakref.WeakSet()


def hide_placeholder_point(points) -> None:
    """Keep napari's placeholder point off the image.

    When none of a Points layer's points is in view (none on this slice of
    a stack, or all of them hidden below the score threshold), napari draws one
    placeholder point of size 0 at the data origin; the minimum screen size
    of :data:`CANVAS_SIZE_LIMITS` turned it into a white disc at the
    image's corner, like a marker that is not there. napari lifts the
    minimum for an empty layer only (napari PR 8639); this lifts it while
    no point is in view and puts it back when one is.
    """
    # plugin widgets get napari's public-only proxies: refer to the real layer
    lay0 = getattr(points, "__wrapped__", points)
    if lay0 in _PLACEHOLDER_GUARDED:
        return
    _PLACEHOLDER_GUARDED.add(lay0)
    ref = weakref.ref(lay0)

    def update(event=None):
        lay = ref()
        view = getattr(lay, "_view_indices", None)  # napari's points in view (private)
        if view is None:
            return
        want = CANVAS_SIZE_LIMITS if len(view) else (0, CANVAS_SIZE_LIMITS[1])
        if tuple(lay.canvas_size_limits) != tuple(want):
            lay.canvas_size_limits = want

    lay0.events.set_data.connect(update)  # after every slicing: new slice, shown, data
    update()


#: Cluster outlines are drawn this many screen pixels wide at any zoom.
CLUSTER_EDGE_SCREEN_PX = 2.0


def _camera(viewer):
    scene = getattr(viewer, "scene", None)
    cam = getattr(scene, "camera", None) if scene is not None else None
    return cam if cam is not None else viewer.camera


def _keep_edges_visible(viewer, shapes) -> None:
    """Keep the clusters' outlines a constant screen width (napari's Shapes
    edge width is in data units, so it would vanish zoomed out and get
    thick zoomed in)."""

    md = shapes.metadata.get("napari_calc") or {}
    if md.get("_zoom_tracked"):
        return
    # plugin widgets get napari's public-only proxies: refer to the real layer
    ref = weakref.ref(getattr(shapes, "__wrapped__", shapes))
    cam = _camera(viewer)

    def on_zoom(event=None):
        lay = ref()
        if lay is None:
            return
        px_per_data = float(cam.zoom) * float(min(lay.scale[-2:]))
        w = CLUSTER_EDGE_SCREEN_PX / max(px_per_data, 1e-6)
        if lay.nshapes:
            lay.edge_width = w
        lay.current_edge_width = w

    cam.events.zoom.connect(on_zoom)
    shapes.metadata = {**shapes.metadata, "napari_calc": {**md, "_zoom_tracked": True}}
    on_zoom()


def detections_from_layers(points, shapes=None) -> Detections:
    """Rebuild :class:`Detections` from napari-calc result layers.

    ``calcifications`` gets the contract columns (the layer's features, with
    review edits); any further feature columns (review labels) go to
    ``extra``. Clusters come from ``shapes`` features when given.
    """
    md = _meta(points)
    spacing = tuple(md.get("spacing_mm") or points.scale)
    nd = points.ndim
    feats = points.features.reset_index(drop=True)
    cols = calc_columns(nd)
    calcs = feats[[c for c in cols if c in feats.columns]].copy()
    rest = [c for c in feats.columns if c not in cols]
    extra = feats[rest].copy() if rest else None
    if shapes is not None and len(shapes.features):
        feats_cl = clusters_of_features(shapes.features)
        cl = feats_cl[[c for c in cluster_columns(nd) if c in feats_cl.columns]].copy()
    else:
        cl = pd.DataFrame({c: [] for c in cluster_columns(nd)})
    shape = md.get("image_shape") or ()
    return Detections(calcifications=calcs, clusters=cl, spacing_mm=spacing,
                      image_shape=tuple(shape), params=dict(md.get("params") or {}),
                      metadata=dict(md.get("image_metadata") or {}), extra=extra)


__all__ += ["NO_CLUSTER"]
