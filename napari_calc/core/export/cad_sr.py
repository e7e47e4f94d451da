"""Mammography CAD SR export (``<stem>.cad-sr.dcm``, PS3.16 TID 4000).

No maintained library writes this template, so the content tree is built
from highdicom's generic content items (plain pydicom Datasets) and wrapped
in an SR whose SOP Class is Mammography CAD SR Storage
(1.2.840.10008.5.1.4.1.1.88.50); highdicom supplies the patient, study,
series, equipment, document-general and evidence modules from the source
reference (:mod:`._dicom`). The tree follows PS3.3 Table A.35.5-2
(checked by dcmtk's ``dsrdump``)::

    CONTAINER (111036, DCM, "Mammography CAD Report")            TID 4000
     +- HAS CONCEPT MOD  Language (121049) = en-US
     +- HAS OBS CONTEXT  Observer Type = Device, Device Observer UID/Name/Manufacturer
     +- CONTAINS CONTAINER (111028, DCM, "Image Library")
     |   +- CONTAINS IMAGE <source>                                  TID 4020
     |       +- HAS ACQ CONTEXT Image Laterality (111027), Image View (111031),
     |          Horizontal / Vertical Pixel Spacing (111026 / 111066) in mm
     +- CONTAINS CODE (111017, "CAD Processing and Findings Summary")   TID 4001
     |   = All algorithms succeeded; with (111242) / without (111241) findings
     |   +- INFERRED FROM CONTAINER (111034, "Individual Impression/Recommendation")  TID 4003
     |       +- HAS CONCEPT MOD Rendering Intent (111056)
     |       +- CONTAINS CODE (111059, "Single Image Finding")                    TID 4006
     |           = (129769006, SCT, "Calcification Cluster") or
     |             (129770007, SCT, "Individual Calcification")
     |           +- HAS CONCEPT MOD Rendering Intent (111056)
     |           +- HAS PROPERTIES TEXT Algorithm Name / Version (111001 / 111003)  TID 4019
     |           +- HAS PROPERTIES NUM  CAD Operating Point (111071)
     |           +- HAS PROPERTIES NUM  Certainty of Finding (111012) in %    -- the score x 100
     |           +- HAS PROPERTIES SCOORD Center (111010) POINT    -- SELECTED FROM IMAGE
     |           +- HAS PROPERTIES SCOORD Outline (111041)         -- SELECTED FROM IMAGE
     |           |     (cluster: closed POLYLINE hull or ELLIPSE; calcification: CIRCLE
     |           |      of its diameter)
     |           +- HAS PROPERTIES NUM Number of calcifications (111038)   [cluster]
     |           +- INFERRED FROM CODE Single Image Finding = Individual Calcification
     |                 (one per member, same sub-items)                   [cluster]
     +- CONTAINS CODE (111064, "Summary of Detections") = Succeeded (111222)
     |   +- INFERRED FROM CONTAINER (111063, "Successful Detections")       TID 4015
     |       +- CONTAINS CODE (111022, "Detection Performed") = Individual Calcification
     |       |   / Calcification Cluster                                    TID 4017
     |       |   +- HAS PROPERTIES TEXT Algorithm Name / Version / Parameters  TID 4019
     |       |   +- HAS PROPERTIES IMAGE <source>
     +- CONTAINS CODE (111065, "Summary of Analyses") = Not Attempted (111225)

One Individual Impression/Recommendation per cluster (its member
calcifications are inferred-from findings) and one per calcification outside
any cluster. Rendering intent encodes the review status: accepted and added
-> "Presentation Required" (111150), candidate -> "Presentation Optional"
(111151), rejected -> "Not for Presentation" (111152); a cluster takes the
strongest intent of its members.

CAD Operating Point: napari-calc runs one operating point per detection; its
number is ``params["operating_point"]`` when given, else 0. The detection
parameters, spacing and image shape are the Algorithm Parameters text (JSON)
of the Detection Performed items.

Reading back (:func:`read_cad_sr_dataset`) recovers ids, positions (SCOORD,
32-bit floats, so within ~1e-4 px), diameters (from the outline circle),
cluster membership, a status (accepted / candidate / rejected from the
rendering intent) and scores (Certainty of Finding / 100, within a unit in
the last place). The clusters' extent and area, and a stack's cluster
slice (a SCOORD lies on one slice), are not in TID 4006: they are computed
again from the members. contrast and cnr have no place there
either and come back as NaN. Use the TID 1500 SR, CSV or JSON for an exact
round trip.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DSequence

from ..atomic import atomic_write
from ..columns import NO_CLUSTER, calc_columns, cluster_columns
from ..detections import Detections
from ._common import ExportError, cluster_outline_px, jsonable, member_table, \
    normalize_calcifications, normalize_clusters, software_version
from .csv_io import frame_to_csv_text
from . import _sr_items as _I
from ._dicom import apply_deidentification, content_digest, document_uids, save_dataset, \
    source_datasets, source_reference, stamp_times

__all__ = ["MAMMO_CAD_SR_CLASS", "build_cad_sr", "write_cad_sr", "read_cad_sr_dataset"]

MAMMO_CAD_SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.50"
_PARAM_PREFIX = "napari-calc:"

_DCM = {
    "report": ("111036", "Mammography CAD Report"),
    "library": ("111028", "Image Library"),
    "laterality": ("111027", "Image Laterality"),
    "view": ("111031", "Image View"),
    "hspacing": ("111026", "Horizontal Pixel Spacing"),
    "vspacing": ("111066", "Vertical Pixel Spacing"),
    "summary": ("111017", "CAD Processing and Findings Summary"),
    "with": ("111242", "All algorithms succeeded; with findings"),
    "without": ("111241", "All algorithms succeeded; without findings"),
    "impression": ("111034", "Individual Impression/Recommendation"),
    "intent": ("111056", "Rendering Intent"),
    "required": ("111150", "Presentation Required: Rendering device is expected to present"),
    "optional": ("111151", "Presentation Optional: Rendering device may present"),
    "notfor": ("111152", "Not for Presentation: Rendering device expected not to present"),
    "sif": ("111059", "Single Image Finding"),
    "algo_name": ("111001", "Algorithm Name"),
    "algo_version": ("111003", "Algorithm Version"),
    "algo_params": ("111002", "Algorithm Parameters"),
    "op": ("111071", "CAD Operating Point"),
    "certainty": ("111012", "Certainty of Finding"),
    "center": ("111010", "Center"),
    "outline": ("111041", "Outline"),
    "ncalc": ("111038", "Number of calcifications"),
    "det_summary": ("111064", "Summary of Detections"),
    "ana_summary": ("111065", "Summary of Analyses"),
    "succeeded": ("111222", "Succeeded"),
    "not_attempted": ("111225", "Not Attempted"),
    "successful_det": ("111063", "Successful Detections"),
    "det_performed": ("111022", "Detection Performed"),
    "language": ("121049", "Language of Content Item and Descendants"),
    "observer_type": ("121005", "Observer Type"),
    "device": ("121007", "Device"),
    "device_uid": ("121012", "Device Observer UID"),
    "device_name": ("121013", "Device Observer Name"),
    "device_manufacturer": ("121014", "Device Observer Manufacturer"),
}
_INDIVIDUAL = ("129770007", "SCT", "Individual Calcification")
_CLUSTER = ("129769006", "SCT", "Calcification Cluster")
_LATERALITY = {"R": ("24028007", "SCT", "Right"), "L": ("7771000", "SCT", "Left"),
               "B": ("51440002", "SCT", "Right and left")}
_VIEWS = {  # CID 4014
    "CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique"),
    "ML": ("399260004", "medio-lateral"), "LM": ("399352003", "latero-medial"),
    "LMO": ("399099002", "latero-medial oblique"),
    "XCCL": ("399192008", "cranio-caudal exaggerated laterally"),
    "FB": ("399196006", "caudo-cranial (from below)"),
    "SIO": ("399188001", "superolateral to inferomedial oblique"),
    "XCCM": ("399101009", "cranio-caudal exaggerated medially"),
    "ISO": ("441555000", "inferomedial to superolateral oblique"),
}  # cleavage (CV) and axillary tail (AT) are view modifiers (CID 4015), not views
_INTENT_RANK = {"rejected": 0, "candidate": 1, "accepted": 2, "added": 2}
_INTENT_BY_RANK = {0: "notfor", 1: "optional", 2: "required"}
_STATUS_BY_INTENT = {"111150": "accepted", "111151": "candidate", "111152": "rejected"}


def _hd():
    import highdicom as hd

    return hd


@functools.lru_cache(maxsize=None)
def _cc(key):
    """The code of ``_DCM[key]`` (one shared, never modified Dataset)."""
    v, m = _DCM[key]
    return _I.code(v, "DCM", m)


@functools.lru_cache(maxsize=None)
def _ccx(t):
    return _I.code(t[0], t[1], t[2])


def _with_children(item, children):
    if children:
        # plain pydicom assignment (highdicom's ContentSequence wants its own items)
        Dataset.__setattr__(item, "ContentSequence", DSequence(list(children)))
    return item


def _image(ref, uid, frames, rel):
    """An IMAGE content item without a concept name (TID 4020 / SELECTED FROM)."""
    return _I.image(rel, ref.sop_class_uid, uid, frames)


def _scoord(name_key, graphic_type, rc, ref, s):
    data = np.column_stack([rc[:, 1] + 0.5, rc[:, 0] + 0.5]).astype(np.float64).ravel()
    uid, frames = ref.instance_for_slice(s)
    key = (uid, tuple(frames or ()))
    cache = ref.item_cache
    if key not in cache:  # identical SELECTED FROM items are shared
        cache[key] = _image(ref, uid, frames, "SELECTED FROM")
    return _I.scoord("HAS PROPERTIES", _cc(name_key), graphic_type, data, cache[key])


def _algorithm_items(rel, params_text=None):
    items = [_I.text(rel, _cc("algo_name"), "napari-calc"),
             _I.text(rel, _cc("algo_version"), software_version()[:64])]
    if params_text is not None:
        items.append(_I.text(rel, _cc("algo_params"), params_text))
    return items


def _intent_item(rank):
    return _I.code_item("HAS CONCEPT MOD", _cc("intent"), _cc(_INTENT_BY_RANK[rank]))


_NO_UNITS = ("1", "UCUM", "no units")
_PERCENT = ("%", "UCUM", "Percent")


def _certainty_items(score) -> list:
    """Certainty of Finding (111012, in %, 0-100) of a finding whose score
    is ``score``, a probability; none when the score is unknown or not in
    [0, 1] (a score on another scale, from an edited table)."""
    try:
        v = float(score)
    except (TypeError, ValueError):
        return []
    if not 0.0 <= v <= 1.0:  # also NaN
        return []
    return [_I.num("HAS PROPERTIES", _cc("certainty"), 100.0 * v, _ccx(_PERCENT))]


def _operating_point(params) -> float:
    v = (params or {}).get("operating_point", 0)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) else 0.0


def _calc_finding(c, ref, ndim, sp, op, rel):
    s = int(c["slice"]) if ndim == 3 else None
    rank = _INTENT_RANK.get(str(c["status"]), 1)
    centre = np.array([[float(c["row"]), float(c["col"])]])
    children = [_intent_item(rank)] + _algorithm_items("HAS PROPERTIES") + [
        _I.num("HAS PROPERTIES", _cc("op"), op, _ccx(_NO_UNITS))] + _certainty_items(c.get("score")) + [
        _scoord("center", "POINT", centre, ref, s),
    ]
    d = float(c["diameter_mm"]) if pd.notna(c["diameter_mm"]) else float("nan")
    if math.isfinite(d) and d > 0:
        # CIRCLE: centre, then a point on the circumference (along the column axis)
        r_px = d / 2.0 / float(sp[-1])
        circ = np.array([[centre[0, 0], centre[0, 1]], [centre[0, 0], centre[0, 1] + r_px]])
        children.append(_scoord("outline", "CIRCLE", circ, ref, s))
    item = _I.code_item(rel, _cc("sif"), _ccx(_INDIVIDUAL))
    # the calcification id travels as the finding's observation UID
    item.ObservationUID = _obs_uid(ref.sop_instance_uid, "calc", int(c["calc_id"]))
    return _with_children(item, children), rank


_KIND = {"calc": 1, "cluster": 2}


def _uid_base(src_uid) -> str:
    """A UID root owned by this export: 2.25.<UUID derived from the source UID>."""
    import hashlib
    import uuid

    h = hashlib.sha256(("napari-calc cad|" + str(src_uid)).encode()).digest()[:16]
    return "2.25." + str(uuid.UUID(bytes=h).int)


def _obs_uid(src_uid, what, ident) -> str:
    """Observation UID ``<base>.<kind>.<id>`` carrying the calcification/cluster id."""
    if int(ident) < 0:
        raise ValueError("ids must be >= 0")
    return f"{_uid_base(src_uid)}.{_KIND[what]}.{int(ident)}"


def _id_from_uid(uid, src_uid, what):
    base = _uid_base(src_uid) + f".{_KIND[what]}."
    uid = str(uid or "")
    if uid.startswith(base) and uid[len(base):].isdigit():
        return int(uid[len(base):])
    return None


def build_cad_sr(det: Detections, ndim: int, metadata: dict, *, deidentified: bool = False,
                 fallback_key: str = "image"):
    """Build the Mammography CAD SR (a pydicom Dataset) for ``det``."""
    hd = _hd()
    calcs = normalize_calcifications(det.calcifications, ndim)
    clus = normalize_clusters(det.clusters, ndim)
    ref = source_reference(metadata, ndim, fallback_key)
    evidence = source_datasets(ref, metadata, deidentified)
    sp = [float(s) for s in det.spacing_mm]
    op = _operating_point(det.params)
    header = {"spacing_mm": sp, "image_shape": [int(s) for s in det.image_shape],
              "laterality": metadata.get("laterality"), "view": metadata.get("view"),
              "parameters": jsonable(det.params or {})}
    params_text = _PARAM_PREFIX + json.dumps(header, sort_keys=True, allow_nan=False)

    language = ("en-US", "RFC5646", "English (United States)")
    items = [
        _I.code_item("HAS CONCEPT MOD", _cc("language"), _ccx(language)),
        _I.code_item("HAS OBS CONTEXT", _cc("observer_type"), _cc("device")),
        _I.uidref("HAS OBS CONTEXT", _cc("device_uid"),
                  str(pydicom.uid.generate_uid(entropy_srcs=["napari-calc device"]))),
        _I.text("HAS OBS CONTEXT", _cc("device_name"), "napari-calc"),
        _I.text("HAS OBS CONTEXT", _cc("device_manufacturer"), "napari-calc"),
    ]
    # Image library (TID 4020)
    lib_images = []
    uids = ref.slice_instance_uids or [ref.sop_instance_uid]
    for uid in uids:
        acq = []
        lat = str(metadata.get("laterality") or "").upper()
        if lat in _LATERALITY:
            acq.append(_I.code_item("HAS ACQ CONTEXT", _cc("laterality"), _ccx(_LATERALITY[lat])))
        view = str(metadata.get("view") or "").upper()
        if view in _VIEWS:
            v = _VIEWS[view]
            acq.append(_I.code_item("HAS ACQ CONTEXT", _cc("view"), _I.code(v[0], "SCT", v[1])))
        mm = ("mm", "UCUM", "millimeter")
        acq.append(_I.num("HAS ACQ CONTEXT", _cc("hspacing"), sp[-1], _ccx(mm)))
        acq.append(_I.num("HAS ACQ CONTEXT", _cc("vspacing"), sp[-2], _ccx(mm)))
        lib_images.append(_with_children(_image(ref, uid, None, "CONTAINS"), acq))
    library = _I.container("CONTAINS", _cc("library"))
    items.append(_with_children(library, lib_images))

    # Findings (TID 4001 / 4003 / 4006)
    members = member_table(calcs)
    impressions = []
    for _, cl in clus.iterrows():
        k = int(cl["cluster_id"])
        m = members.get(k)
        s = int(round(float(cl["slice"]))) if ndim == 3 else None
        member_items, ranks = [], []
        if m is not None:
            for _, c in m.iterrows():
                it, rk = _calc_finding(c, ref, ndim, sp, op, "INFERRED FROM")
                member_items.append(it)
                ranks.append(rk)
        rank = max(ranks) if ranks else 1
        kind, outline = cluster_outline_px(m, cl, sp)
        if kind == "polygon":
            outline = np.vstack([outline, outline[:1]])
        children = [_intent_item(rank)] + _algorithm_items("HAS PROPERTIES") + [
            _I.num("HAS PROPERTIES", _cc("op"), op, _ccx(_NO_UNITS))] + _certainty_items(cl.get("score")) + [
            _scoord("center", "POINT", np.array([[float(cl["row"]), float(cl["col"])]]), ref, s),
            _scoord("outline", "POLYLINE" if kind == "polygon" else "ELLIPSE", outline, ref, s),
            _I.num("HAS PROPERTIES", _cc("ncalc"), int(cl["n_calcifications"]), _ccx(_NO_UNITS)),
        ] + member_items
        finding = _I.code_item("CONTAINS", _cc("sif"), _ccx(_CLUSTER))
        finding.ObservationUID = _obs_uid(ref.sop_instance_uid, "cluster", k)
        finding = _with_children(finding, children)
        imp = _I.container("INFERRED FROM", _cc("impression"))
        impressions.append(_with_children(imp, [_intent_item(rank), finding]))
    in_cluster = set(members)
    for _, c in calcs.iterrows():
        if int(c["cluster_id"]) in in_cluster:
            continue
        it, rk = _calc_finding(c, ref, ndim, sp, op, "CONTAINS")
        imp = _I.container("INFERRED FROM", _cc("impression"))
        impressions.append(_with_children(imp, [_intent_item(rk), it]))
    summary = _I.code_item("CONTAINS", _cc("summary"), _cc("with" if impressions else "without"))
    items.append(_with_children(summary, impressions))

    # Detections performed (TID 4015 / 4017)
    performed = []
    for finding in (_INDIVIDUAL, _CLUSTER):
        it = _I.code_item("CONTAINS", _cc("det_performed"), _ccx(finding))
        kids = _algorithm_items("HAS PROPERTIES", params_text) + [
            _image(ref, uid, None, "HAS PROPERTIES") for uid in uids]
        performed.append(_with_children(it, kids))
    successful = _I.container("INFERRED FROM", _cc("successful_det"))
    det_summary = _I.code_item("CONTAINS", _cc("det_summary"), _cc("succeeded"))
    items.append(_with_children(det_summary, [_with_children(successful, performed)]))
    items.append(_I.code_item("CONTAINS", _cc("ana_summary"), _cc("not_attempted")))
    series_uid, sop_uid = document_uids("tid4000", content_digest(
        frame_to_csv_text(calcs), frame_to_csv_text(clus),
        json.dumps(header, sort_keys=True), json.dumps(jsonable(metadata), sort_keys=True),
        deidentified, software_version()))
    # highdicom builds the document around a root holding a placeholder item;
    # the tree (plain pydicom items, see ._sr_items) goes in afterwards - the
    # evidence sequence does not depend on it.
    root = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept(_DCM["report"][0], "DCM", _DCM["report"][1]), template_id="4000")
    root.ContentSequence = [hd.sr.CodeContentItem(
        name=hd.sr.CodedConcept(_DCM["language"][0], "DCM", _DCM["language"][1]),
        value=hd.sr.CodedConcept(*language), relationship_type="HAS CONCEPT MOD")]
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence, content=root,
        series_instance_uid=series_uid, series_number=9902,
        sop_instance_uid=sop_uid, instance_number=1,
        manufacturer="napari-calc", is_complete=True, is_final=False, is_verified=False,
    )
    Dataset.__setattr__(sr, "ContentSequence", DSequence(items))
    sr.SOPClassUID = MAMMO_CAD_SR_CLASS
    sr.file_meta.MediaStorageSOPClassUID = MAMMO_CAD_SR_CLASS
    sr.SeriesDescription = "napari-calc Mammography CAD"
    sr.SoftwareVersions = software_version()[:64]
    stamp_times(sr)
    if deidentified:
        apply_deidentification(sr)
    return sr


def write_cad_sr(det: Detections, path, ndim: int, metadata: dict, *,
                 deidentified: bool = False, salt=None, fallback_key: str | None = None) -> None:
    """Write ``<stem>.cad-sr.dcm`` atomically (``fallback_key`` as for ``write_sr``)."""
    from pathlib import Path

    key = fallback_key or Path(path).name.split(".")[0]
    sr = build_cad_sr(det, ndim, metadata, deidentified=deidentified, fallback_key=key)
    with atomic_write(path, "wb") as f:
        save_dataset(sr, f)


# --------------------------------------------------------------------------- reading


def _cv(item, seq="ConceptNameCodeSequence"):
    s = item.get(seq)
    return str(s[0].CodeValue) if s else ""


def _children(item):
    return list(item.get("ContentSequence") or [])


def _read_finding(item, slice_of_uid=None) -> dict:
    """The values of a Single Image Finding. ``slice_of_uid``: the slice
    index of each image of a series (one file per slice, no frame numbers)."""
    rec: dict = {}
    for ch in _children(item):
        name = _cv(ch)
        vt = ch.get("ValueType")
        if vt == "CODE" and name == _DCM["intent"][0]:
            rec["status"] = _STATUS_BY_INTENT.get(_cv(ch, "ConceptCodeSequence"), "candidate")
        elif vt == "SCOORD" and name == _DCM["center"][0]:
            g = np.asarray(ch.GraphicData, dtype=float)
            rec["col"], rec["row"] = float(g[0]) - 0.5, float(g[1]) - 0.5
            for im in _children(ch):
                rs = im.ReferencedSOPSequence[0]
                if "ReferencedFrameNumber" in rs:
                    fr = rs.ReferencedFrameNumber
                    rec["slice"] = int(fr[0] if isinstance(fr, pydicom.multival.MultiValue) else fr) - 1
                elif slice_of_uid and str(rs.get("ReferencedSOPInstanceUID", "")) in slice_of_uid:
                    rec["slice"] = slice_of_uid[str(rs.ReferencedSOPInstanceUID)]
        elif vt == "SCOORD" and name == _DCM["outline"][0] and ch.GraphicType == "CIRCLE":
            g = np.asarray(ch.GraphicData, dtype=float).reshape(-1, 2)
            rec["_radius_px"] = float(np.hypot(*(g[1] - g[0])))
        elif vt == "NUM" and name == _DCM["ncalc"][0]:
            rec["n_calcifications"] = int(round(float(ch.MeasuredValueSequence[0].NumericValue)))
        elif vt == "NUM" and name == _DCM["certainty"][0]:
            mv = ch.MeasuredValueSequence[0]
            pct = float(mv.FloatingPointValue if "FloatingPointValue" in mv else mv.NumericValue)
            if 0.0 <= pct <= 100.0:
                rec["score"] = pct / 100.0
    return rec


def read_cad_sr_dataset(ds, path) -> Detections:
    """Detections from a Mammography CAD SR written by :func:`write_cad_sr`."""
    header = None
    for it in _iter(ds.get("ContentSequence")):
        if it.get("ValueType") == "TEXT" and _cv(it) == _DCM["algo_params"][0]:
            t = str(it.TextValue)
            if t.startswith(_PARAM_PREFIX):
                header = json.loads(t[len(_PARAM_PREFIX):])
                break
    if header is None:
        raise ExportError("Mammography CAD SR without napari-calc parameters", path)
    sp = [float(s) for s in header["spacing_mm"]]
    shape = tuple(int(s) for s in header["image_shape"])
    ndim = len(shape)
    src_uid = None
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence") or []:
        for series in study.ReferencedSeriesSequence:
            src_uid = str(series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    calcs, clusters = [], []

    # a series (one file per slice): the Image Library lists its images in slice order
    library = next((it for it in ds.get("ContentSequence") or []
                    if it.get("ValueType") == "CONTAINER" and _cv(it) == _DCM["library"][0]), None)
    lib_uids = [str(im.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for im in _children(library)
                if im.get("ValueType") == "IMAGE"] if library is not None else []
    slice_of_uid = {u: k for k, u in enumerate(lib_uids)} if ndim == 3 and len(lib_uids) > 1 else None
    all_sif = [it for it in _iter(ds.get("ContentSequence"))
               if it.get("ValueType") == "CODE" and _cv(it) == _DCM["sif"][0]]
    next_id = [1 + max([i for i in (_id_from_uid(it.get("ObservationUID"), src_uid, "calc")
                                    for it in all_sif) if i is not None] or [0])]

    def new_calc(item, cluster_id):
        rec = _read_finding(item, slice_of_uid)
        cid = _id_from_uid(item.get("ObservationUID"), src_uid, "calc")
        if cid is None:
            cid = next_id[0]
            next_id[0] += 1
        r = rec.pop("_radius_px", None)
        rec.setdefault("score", np.nan)
        rec.update(calc_id=cid, cluster_id=cluster_id,
                   diameter_mm=(2 * r * sp[-1]) if r is not None else np.nan,
                   contrast=np.nan, cnr=np.nan)
        calcs.append(rec)

    for sif in all_sif:
        if _cv(sif, "ConceptCodeSequence") != _CLUSTER[0]:
            continue
        k = _id_from_uid(sif.get("ObservationUID"), src_uid, "cluster")
        if k is None:
            k = len(clusters) + 1
        rec = _read_finding(sif, slice_of_uid)
        rec.pop("status", None)
        rec.setdefault("score", np.nan)
        rec.update(cluster_id=k, max_extent_mm=np.nan, area_mm2=np.nan)
        clusters.append(rec)
        for ch in _children(sif):
            if ch.get("ValueType") == "CODE" and _cv(ch) == _DCM["sif"][0]:
                new_calc(ch, k)
    for sif in all_sif:
        if _cv(sif, "ConceptCodeSequence") == _INDIVIDUAL[0] and sif.RelationshipType == "CONTAINS":
            new_calc(sif, NO_CLUSTER)
    for rec in calcs + clusters:
        rec["y_mm"] = rec["row"] * sp[-2]
        rec["x_mm"] = rec["col"] * sp[-1]
        if ndim == 3:
            rec.setdefault("slice", 0)
            rec["z_mm"] = rec["slice"] * sp[0]
    cdf = pd.DataFrame.from_records(calcs) if calcs else pd.DataFrame({c: [] for c in calc_columns(ndim)})
    kdf = pd.DataFrame.from_records(clusters) if clusters else \
        pd.DataFrame({c: [] for c in cluster_columns(ndim)})
    if len(cdf):
        cdf = cdf.sort_values("calc_id", kind="stable")
    if len(kdf):
        kdf = kdf.sort_values("cluster_id", kind="stable")
        if len(cdf):
            # extent and area are not in TID 4006: the same summary of the
            # members as the detection made (cluster.cluster_table)
            from ..cluster import cluster_table

            made = cluster_table(cdf, sp, ndim=ndim).set_index("cluster_id")
            # (a SCOORD is on one slice: a stack's cluster centre is between them)
            for col in ("max_extent_mm", "area_mm2") + (("slice", "z_mm") if ndim == 3 else ()):
                got = kdf["cluster_id"].map(made[col]).astype(float)
                kdf[col] = got if col in ("max_extent_mm", "area_mm2") else got.fillna(kdf[col])
    calcs_n = normalize_calcifications(cdf, ndim)
    clus_n = normalize_clusters(kdf, ndim)
    from .sr import _metadata_from_sr

    md = _metadata_from_sr(ds)
    md.update(laterality=header.get("laterality"), view=header.get("view"))
    return Detections(calcs_n, clus_n, tuple(sp), shape, dict(header.get("parameters") or {}), md)


def _iter(seq):
    for it in seq or []:
        yield it
        yield from _iter(it.get("ContentSequence"))
