"""3D Slicer markups export (``<stem>.mrk.json``, markups schema v1.0.3).

The file holds one ``Fiducial`` markup named ``calcifications`` (one control
point per calcification, labelled ``MC-<calc_id>``, rejected ones hidden)
and, per cluster, a ``ClosedCurve`` through the convex hull of its member
calcifications (three or more non-collinear members) or an ``ROI`` box
around the cluster otherwise. Coordinates are ``LPS`` in ``mm``.

Pixel to patient (LPS) mapping, :func:`pixel_to_lps`
-----------------------------------------------------
*With DICOM geometry* (``image_position_patient`` = IPP and
``image_orientation_patient`` = IOP in the metadata): IOP[0:3] is the
direction of increasing column index, IOP[3:6] that of increasing row index
(PS3.3 C.7.6.2.1.1), so the centre of pixel ``(row, col)`` is::

    P = IPP + IOP[0:3] * col * col_mm + IOP[3:6] * row * row_mm

For a 3-D stack with one IPP per slice (``frame_positions_patient``, as the
DICOM reader records them, or ``image_position_patient`` given as such a
list), slice ``k`` starts at its own IPP and a fractional slice lies on the
straight line between its neighbours (beyond the ends, on the line through
the last two): the slices may run against ``IOP[0:3] x IOP[3:6]``, as the
tomosynthesis phantom's do. With a single IPP, ``+ n * slice * slice_mm``
with ``n = IOP[0:3] x IOP[3:6]``; so too from the first slice's IPP (``n``
turned to the slices' direction) when all slices share one IPP or the user
set the spacing (``spacing_source = "user"``), as ``z_mm`` in the tables.
Points then land on the DICOM image loaded in Slicer.

*Without geometry* (typical for MG, TIFF and OME-TIFF inputs)::

    L = col * col_mm,   P = row * row_mm,   S = slice * slice_mm (0 for 2-D)

This is exactly where Slicer puts voxel ``(i=col, j=row, k=slice)`` of a
volume with this spacing, origin 0 and identity IJK-to-LPS directions - the
geometry Slicer gives a TIFF it loads, or an NRRD written with
``space: left-posterior-superior``, ``space origin: (0,0,0)`` and
``space directions: (col_mm,0,0) (0,row_mm,0) (0,0,slice_mm)``. (Slicer
displays RAS = (-L, -P, S); the markups file says LPS so it converts.)
"""

from __future__ import annotations

import json

import numpy as np

from ..atomic import atomic_write_text
from ..detections import Detections
from ._common import cluster_outline_px, jsonable, member_table, normalize_calcifications, \
    normalize_clusters

__all__ = ["SCHEMA_URL", "pixel_to_lps", "detections_to_markups", "write_markups"]

SCHEMA_URL = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/"
              "Markups/Resources/Schema/markups-schema-v1.0.3.json#")
#: Identity (RAS) orientation expressed in LPS, as Slicer writes it.
_ORIENTATION = [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0]


def _geometry(metadata: dict):
    """``(ipp, iop)`` as arrays, ``ipp`` of shape (3,) or (slices, 3) (the
    per-frame positions when the metadata has them), or ``(None, None)``."""
    iop = metadata.get("image_orientation_patient") if metadata else None
    ipp = None
    if metadata:
        frames = metadata.get("frame_positions_patient")
        try:
            fp = np.asarray(frames, dtype=float) if frames is not None else None
        except (TypeError, ValueError):  # e.g. a frame without a position
            fp = None
        if fp is not None and fp.ndim == 2 and fp.shape[0] >= 1 and fp.shape[1] == 3:
            ipp = fp
        else:
            ipp = metadata.get("image_position_patient")
    if ipp is None or iop is None:
        return None, None
    try:
        iop = np.asarray(iop, dtype=float).reshape(6)
        ipp = np.asarray(ipp, dtype=float)
    except (TypeError, ValueError):
        return None, None
    if ipp.shape not in ((3,),) and not (ipp.ndim == 2 and ipp.shape[1] == 3):
        return None, None
    if not np.all(np.isfinite(iop)) or not np.all(np.isfinite(ipp)):
        return None, None
    return ipp, iop


def pixel_to_lps(rows, cols, slices=None, metadata=None, spacing_mm=None) -> np.ndarray:
    """Patient LPS position (mm) of pixel centres.

    Parameters
    ----------
    rows, cols : array_like
        0-based (sub-)pixel row and column indices.
    slices : array_like, optional
        0-based slice indices of a 3-D stack (``None`` for 2-D).
    metadata : dict, optional
        Image metadata; ``image_orientation_patient`` with
        ``frame_positions_patient`` (one position per slice) or
        ``image_position_patient`` is used when present.
    spacing_mm : sequence of float
        ``(row_mm, col_mm)`` or ``(slice_mm, row_mm, col_mm)``.

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` LPS coordinates in mm (see the module docstring).
    """
    rows = np.atleast_1d(np.asarray(rows, dtype=float))
    cols = np.atleast_1d(np.asarray(cols, dtype=float))
    if spacing_mm is None:
        raise ValueError("spacing_mm is required")
    sp = [float(s) for s in spacing_mm]
    row_mm, col_mm = sp[-2], sp[-1]
    slice_mm = sp[0] if len(sp) == 3 else 0.0
    sl = np.zeros_like(rows) if slices is None else np.atleast_1d(np.asarray(slices, dtype=float))
    ipp, iop = _geometry(metadata or {})
    if ipp is None:
        return np.column_stack([cols * col_mm, rows * row_mm, sl * slice_mm])
    cdir, rdir = iop[:3], iop[3:]
    normal = np.cross(cdir, rdir)
    if ipp.ndim == 2 and len(ipp) >= 2 and (not np.any(ipp[1:] != ipp[:-1])
                                            or (metadata or {}).get("spacing_source") == "user"):
        # positions that do not tell the slices apart, or a slice spacing the
        # user set: from the first slice, along the normal by slice_mm (in the
        # positions' direction), as z_mm = slice * slice_mm in the tables
        along = float(np.dot(ipp[1] - ipp[0], normal))
        normal = -normal if along < 0 else normal
        ipp = ipp[0]
    if ipp.ndim == 2 and len(ipp) >= 2:  # one position per slice: along them
        i0 = np.clip(np.floor(sl).astype(int), 0, len(ipp) - 2)
        frac = (sl - i0)[:, None]  # < 0 or > 1 beyond the ends: on the end segment's line
        origin = ipp[i0] + frac * (ipp[i0 + 1] - ipp[i0])
        return origin + np.outer(cols * col_mm, cdir) + np.outer(rows * row_mm, rdir)
    if ipp.ndim == 2:  # a single slice's position
        ipp = ipp[0]
    return ipp[None, :] + np.outer(cols * col_mm, cdir) + np.outer(rows * row_mm, rdir) + \
        np.outer(sl * slice_mm, normal)


def _axes(metadata: dict):
    """Column, row and normal unit vectors in LPS."""
    ipp, iop = _geometry(metadata or {})
    if ipp is None:
        return np.eye(3)[0], np.eye(3)[1], np.eye(3)[2]
    return iop[:3], iop[3:], np.cross(iop[:3], iop[3:])


def _control_point(pid: str, label: str, pos, description: str = "", visible=True) -> dict:
    return {
        "id": pid, "label": label, "description": description, "associatedNodeID": "",
        "position": [float(v) for v in pos], "orientation": list(_ORIENTATION),
        "selected": True, "locked": True, "visibility": bool(visible),
        "positionStatus": "defined",
    }


def _display(color, glyph="Sphere3D") -> dict:
    return {
        "visibility": True, "opacity": 1.0, "color": list(color),
        "selectedColor": list(color), "activeColor": [0.4, 1.0, 0.0],
        "propertiesLabelVisibility": False, "pointLabelsVisibility": True,
        "textScale": 2.0, "glyphType": glyph, "glyphScale": 1.0, "glyphSize": 1.0,
        "useGlyphScale": False, "sliceProjection": False, "lineThickness": 0.2,
    }


def _fmt(v, spec=".4g"):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "nan" if not np.isfinite(f) else format(f, spec)


def detections_to_markups(det: Detections, ndim: int, metadata: dict) -> dict:
    """The markups document (a dict) for ``det``."""
    calcs = normalize_calcifications(det.calcifications, ndim)
    clus = normalize_clusters(det.clusters, ndim)
    sp = det.spacing_mm
    sl = calcs["slice"].to_numpy(float) if ndim == 3 else None
    pos = pixel_to_lps(calcs["row"].to_numpy(float), calcs["col"].to_numpy(float), sl,
                       metadata, sp) if len(calcs) else np.empty((0, 3))
    cps = []
    for (_, c), p in zip(calcs.iterrows(), pos):
        desc = (f"diameter {_fmt(c['diameter_mm'])} mm; contrast {_fmt(c['contrast'])}; "
                f"cnr {_fmt(c['cnr'])}; score {_fmt(c['score'])}; status {c['status']}; "
                f"cluster {int(c['cluster_id'])}")
        cps.append(_control_point(str(int(c["calc_id"])), f"MC-{int(c['calc_id'])}", p, desc,
                                  visible=str(c["status"]) != "rejected"))
    markups = [{
        "type": "Fiducial", "name": "calcifications", "coordinateSystem": "LPS",
        "coordinateUnits": "mm", "locked": True, "fixedNumberOfControlPoints": False,
        "labelFormat": "MC-%d", "lastUsedControlPointNumber": len(cps),
        "controlPoints": cps, "measurements": [],
        "display": _display([1.0, 0.3, 0.1]),
    }]
    members = member_table(calcs)
    cax, rax, nax = _axes(metadata)
    for _, cl in clus.iterrows():
        cid = int(cl["cluster_id"])
        m = members.get(cid)
        kind, outline = cluster_outline_px(m, cl, sp)
        if ndim == 3:
            s = float(cl["slice"])
            osl = np.full(len(outline), s)
        else:
            osl = None
        pts = pixel_to_lps(outline[:, 0], outline[:, 1], osl, metadata, sp)
        desc = (f"{int(cl['n_calcifications'])} calcifications; max extent "
                f"{_fmt(cl['max_extent_mm'])} mm; area {_fmt(cl['area_mm2'])} mm2; "
                f"score {_fmt(cl['score'])}")
        name = f"Cluster-{cid}"
        if kind == "polygon":
            mk = {
                "type": "ClosedCurve", "name": name, "coordinateSystem": "LPS",
                "coordinateUnits": "mm", "locked": True, "labelFormat": f"{name}-%d",
                "controlPoints": [_control_point(str(i + 1), f"{name}-{i + 1}", p, desc if i == 0 else "")
                                  for i, p in enumerate(pts)],
                "measurements": [], "display": _display([1.0, 1.0, 0.0], "Sphere3D"),
            }
            mk["display"]["pointLabelsVisibility"] = False
        else:
            # ROI box spanning the ellipse, axes along the image axes
            rr, cc = outline[:, 0], outline[:, 1]
            r0, r1, c0, c1 = rr.min(), rr.max(), cc.min(), cc.max()
            if ndim == 3:
                if m is not None and len(m):
                    s0, s1 = float(m["slice"].min()), float(m["slice"].max())
                else:
                    s0 = s1 = float(cl["slice"])
                cs = (s0 + s1) / 2
                depth = (s1 - s0 + 1) * float(sp[0])
            else:
                cs, depth = None, 0.0
            center = pixel_to_lps([(r0 + r1) / 2], [(c0 + c1) / 2],
                                  None if cs is None else [cs], metadata, sp)[0]
            size = [float((c1 - c0) * float(sp[-1])), float((r1 - r0) * float(sp[-2])), float(depth)]
            orient = np.column_stack([cax, rax, nax]).reshape(-1)
            mk = {
                "type": "ROI", "name": name, "coordinateSystem": "LPS",
                "coordinateUnits": "mm", "locked": True, "roiType": "Box",
                "insideOut": False, "center": [float(v) for v in center],
                "orientation": [float(v) for v in orient], "size": size,
                "controlPoints": [_control_point("1", name, center, desc)],
                "measurements": [], "display": _display([1.0, 1.0, 0.0]),
            }
        markups.append(mk)
    return {"@schema": SCHEMA_URL, "markups": jsonable(markups)}


def write_markups(det: Detections, path, ndim: int, metadata: dict) -> None:
    """Write ``<stem>.mrk.json`` atomically."""
    doc = detections_to_markups(det, ndim, metadata)
    atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")
