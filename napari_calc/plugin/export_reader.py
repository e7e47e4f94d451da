"""npe2 reader: reopen napari-calc exports as result layers, so review continues.

Accepted files: ``*.calcifications.csv`` and ``*.clusters.csv`` (either one
loads both tables; a cluster table without its calcification table gives the
clusters layer alone, each cluster a circle of its ``max_extent_mm``), ``*.detections.json`` (and any ``.json`` whose
``"format"`` is ``"napari-calc detections"``), ``*.sr.dcm`` (TID 1500) and
``*.cad-sr.dcm`` (Mammography CAD SR), via
:func:`napari_calc.core.export.read_detections`.

Each file gives two layers, built with the same helpers as a detection run
(:mod:`.layers`), so the review widget recognises them:

* Points ``"<stem> calcifications"``: data = ``(row, col)`` or
  ``(slice, row, col)`` pixel coordinates, ``scale`` = spacing in mm,
  ``features`` = the calcification columns (then review columns);
* Shapes ``"<stem> clusters"``: one polygon per cluster around its member
  calcifications (convex hull padded by a disc, so one- and two-member
  clusters get a rounded outline; in a stack, one on every slice from the
  cluster's first to its last member), ``features`` = the cluster columns
  (one row per polygon: a stack's cluster repeats on each of its slices).

``<stem>`` is the file name without the export suffix, i.e. the image's
name, so the layers pair with the image layer of the same name.
"""

from __future__ import annotations

import os

__all__ = ["get_detections_reader", "read_detections_layers", "FILENAME_PATTERNS"]

#: Name suffixes this reader accepts (also the manifest's filename_patterns).
FILENAME_PATTERNS = ("*.calcifications.csv", "*.clusters.csv", "*.detections.json", "*.json",
                     "*.sr.dcm", "*.cad-sr.dcm")
_SUFFIXES = (".calcifications.csv", ".clusters.csv", ".detections.json", ".cad-sr.dcm",
             ".sr.dcm", ".json")


def _stem(path: str) -> str:
    name = os.path.basename(path)
    for s in _SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return os.path.splitext(name)[0]


def _ours(path: str) -> bool:
    low = path.lower()
    if not os.path.isfile(path):
        return False
    if low.endswith(".mrk.json"):
        # our Slicer markups are an export only: claimed, so that napari
        # shows the reason (open the CSV, JSON or SR) instead of "no reader";
        # other markups files are left to other plugins
        try:
            with open(path, "rb") as f:
                return b'"labelFormat": "MC-%d"' in f.read(4096)
        except OSError:
            return False
    if low.endswith((".calcifications.csv", ".clusters.csv", ".sr.dcm", ".cad-sr.dcm",
                     ".detections.json")):
        return True
    if low.endswith(".json"):
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
            return b'"napari-calc detections"' in head
        except OSError:
            return False
    return False


def read_detections_layers(path: str) -> list[tuple]:
    """LayerData tuples (points, shapes) for one export file."""
    from ..core.export import read_detections
    from .layers import calc_layer_name, cluster_layer_name, points_layer_kwargs, \
        shapes_layer_kwargs

    det = read_detections(path)
    stem = _stem(path)
    det.metadata.setdefault("export_path", os.fspath(path))
    sk = shapes_layer_kwargs(det, name=cluster_layer_name(stem), source_layer=stem)
    sdata = sk.pop("data")
    path = os.fspath(path)
    if path.lower().endswith(".clusters.csv") and not os.path.exists(
            path[: -len(".clusters.csv")] + ".calcifications.csv"):
        # a cluster table on its own: its outlines, and no empty calcifications
        # layer for the Review panel to take for this image's review
        return [(sdata, sk, "shapes")]
    pk = points_layer_kwargs(det, name=calc_layer_name(stem), source_layer=stem)
    pdata = pk.pop("data")
    return [(sdata, sk, "shapes"), (pdata, pk, "points")]


def get_detections_reader(path):
    """npe2 reader contribution for napari-calc exports.

    Parameters
    ----------
    path : str or list of str

    Returns
    -------
    callable or None
        A function ``path -> list[LayerData]``, or None when the file is not
        one of our exports.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    paths = [os.fspath(p) for p in paths]
    if not paths or not all(_ours(p) for p in paths):
        return None
    # a calcifications + clusters pair selected together loads once
    seen, unique = set(), []
    for p in paths:
        key = os.path.join(os.path.dirname(p), _stem(p)) if p.lower().endswith(".csv") else p
        if key not in seen:
            seen.add(key)
            unique.append(p)

    def reader(_path):
        out = []
        for p in unique:
            out.extend(read_detections_layers(p))
        return out

    return reader
