"""DICOM SR export: a TID 1500 Measurement Report written with highdicom.

``<stem>.sr.dcm`` is a Comprehensive 3D SR (SOP Class 1.2.840.10008.5.1.4.1.1.88.34;
its regions are 2-D SCOORD on the image, no SCOORD3D) holding a
TID 1500 Measurement Report. It references the source image (see
:mod:`._dicom` for non-DICOM sources) and holds one TID 1410 Planar ROI
measurement group per calcification and per cluster:

* calcification: tracking identifier ``MC-<calc_id>`` (+ a UID derived from
  the source SOP Instance UID and the id), finding type (129770007, SCT,
  "Individual Calcification"), an image region ``POINT`` at the centre
  (DICOM image coordinates: column + 0.5, row + 0.5; multi-frame stacks
  reference frame ``slice + 1``), measurements Diameter (81827009, SCT) in
  mm and contrast, contrast-to-noise ratio and score (private codes,
  unit "1"), the review status as a qualitative evaluation;
* cluster: tracking identifier ``Cluster-<cluster_id>``, finding type
  (129769006, SCT, "Calcification Cluster"), region ``POLYLINE`` (closed
  convex hull of the members) or ``ELLIPSE`` (fewer than three members),
  measurements Number of calcifications (111038, DCM), Area (42798000,
  SCT) in mm2, maximum extent (private) in mm and score.

SCOORD coordinates are 32-bit floats by definition, so every group also
carries the exact position and the cluster id as NUM items with private
codes (scheme ``99NAPCALC``) and a 64-bit FloatingPointValue, which
:func:`read_sr_detections` prefers: ``row``, ``col`` (``slice``), and
``y_mm``, ``x_mm`` (``z_mm``) unless they equal index x spacing bit for bit
(the detector's convention; the reader recomputes them then), ``cluster_id``
unless -1; ``calc_id`` is the number in the tracking identifier. Positions and
features therefore round trip exactly. Extra numeric review columns become
further private NUM items, extra text columns qualitative evaluations whose
code meaning is the text (up to 64 characters). The detection parameters,
spacing and image shape are the algorithm parameters (TID 4019, JSON text)
of the first calcification group and of every cluster group.

The measurement groups of the calcifications are built as plain pydicom
items (:mod:`._sr_items`), identical to what highdicom's template classes
produce (a test compares them byte for byte) but several times faster
(highdicom validates every item against the standard's tables); with
thousands of candidates that is the difference between seconds and
minutes. highdicom builds the document, the report and the cluster groups.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math

import numpy as np
import pandas as pd
import pydicom
from pydicom.sr.codedict import codes

from ..atomic import atomic_write
from ..columns import NO_CLUSTER, calc_columns, cluster_columns
from ..detections import Detections
from ._common import ExportError, cluster_outline_px, jsonable, member_table, \
    normalize_calcifications, normalize_clusters, software_version
from .csv_io import frame_to_csv_text
from ._dicom import PRIVATE_SCHEME, apply_deidentification, coding_scheme_identification, \
    content_digest, document_uids, save_dataset, source_datasets, source_reference, stamp_times

__all__ = ["write_sr", "read_sr_detections", "build_sr"]

ALGORITHM_NAME = "napari-calc"
_PARAM_PREFIX = "napari-calc:"


def _hd():
    import highdicom as hd

    return hd


@functools.lru_cache(maxsize=4096)
def _code(value, meaning, scheme=PRIVATE_SCHEME):
    return _hd().sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


@functools.lru_cache(maxsize=1)
def _units():
    hd = _hd()
    return {
        "mm": hd.sr.CodedConcept("mm", "UCUM", "millimeter"),
        "mm2": hd.sr.CodedConcept("mm2", "UCUM", "square millimeter"),
        "1": hd.sr.CodedConcept("1", "UCUM", "no units"),
        "px": hd.sr.CodedConcept("{pixel}", "UCUM", "pixel"),
    }


#: column -> (code value, meaning, unit key); private codes
_PRIVATE_NUM = {
    "calc_id": ("calc_id", "Calcification ID", "1"),
    "cluster_id": ("cluster_id", "Cluster ID", "1"),
    "slice": ("slice", "Slice index", "px"),
    "row": ("row", "Row index", "px"),
    "col": ("col", "Column index", "px"),
    "z_mm": ("z_mm", "Z position", "mm"),
    "y_mm": ("y_mm", "Y position", "mm"),
    "x_mm": ("x_mm", "X position", "mm"),
    "contrast": ("contrast", "Contrast", "1"),
    "cnr": ("cnr", "Contrast-to-noise ratio", "1"),
    "score": ("score", "Detection score", "1"),
    "max_extent_mm": ("max_extent_mm", "Maximum extent", "mm"),
}
#: column -> (code value, scheme, meaning, unit key); standard codes
_STD_NUM = {
    "diameter_mm": ("81827009", "SCT", "Diameter", "mm"),
    "n_calcifications": ("111038", "DCM", "Number of calcifications", "1"),
    "area_mm2": ("42798000", "SCT", "Area", "mm2"),
}
_STATUS_NAME = ("status", "Review status")
_FINDING_CALC = ("129770007", "SCT", "Individual Calcification")
_FINDING_CLUSTER = ("129769006", "SCT", "Calcification Cluster")
_EXTRA_PREFIX = "x:"


def _num_name(col):
    if col in _STD_NUM:
        v, s, m, _ = _STD_NUM[col]
        return _code(v, m, s), _STD_NUM[col][3]
    if col in _PRIVATE_NUM:
        v, m, u = _PRIVATE_NUM[col]
        return _code(v, m), u
    return _code((_EXTRA_PREFIX + col)[:16], col[:64]), "1"


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


_MM_OF = {"y_mm": ("row", -2), "x_mm": ("col", -1), "z_mm": ("slice", 0)}


def _written_columns(rec, cols, spacing) -> list:
    """The numeric columns a group carries: finite values, minus what the
    reader recomputes exactly - ``calc_id`` (in the tracking identifier),
    ``cluster_id`` -1 (the default) and ``y_mm``/``x_mm``/``z_mm`` when they
    equal index x spacing bit for bit (the detector's convention)."""
    out = []
    for c in cols:
        v = rec[c]
        if not _is_number(v) or not math.isfinite(float(v)):
            continue
        if c == "calc_id" or (c == "cluster_id" and int(v) == NO_CLUSTER and "n_calcifications" not in rec):
            continue
        if c in _MM_OF and _MM_OF[c][0] in rec:
            idx, ax = _MM_OF[c]
            iv = rec[idx]
            if _is_number(iv) and float(iv) * float(spacing[ax]) == float(v):
                continue
        out.append(c)
    return out


def _measurements(row, cols, units):
    hd = _hd()
    out = []
    for c in cols:
        v = row[c]
        name, u = _num_name(c)
        out.append(hd.sr.Measurement(name=name, value=float(v), unit=units[u]))
    return out


def _text_evaluations(row: pd.Series, cols):
    hd = _hd()
    out = []
    for c in cols:
        v = row[c]
        if v is None or (isinstance(v, float) and math.isnan(v)) or _is_number(v):
            continue
        text = str(v)
        if not text:
            continue
        value = _code(hashlib.sha1(text.encode()).hexdigest()[:16], text[:64])
        out.append(hd.sr.QualitativeEvaluation(
            name=_code((_EXTRA_PREFIX + c)[:16], c[:64]), value=value))
    return out


def _uid_for(ref_uid: str, what: str, ident) -> str:
    return str(pydicom.uid.generate_uid(entropy_srcs=["napari-calc tracking", ref_uid, what,
                                                      str(ident)]))


_N = {  # concept names used by the fast builder (as highdicom writes them)
    "tracking_id": ("112039", "DCM", "Tracking Identifier"),
    "tracking_uid": ("112040", "DCM", "Tracking Unique Identifier"),
    "finding": ("121071", "DCM", "Finding"),
    "algo_name": ("111001", "DCM", "Algorithm Name"),
    "algo_version": ("111003", "DCM", "Algorithm Version"),
    "algo_params": ("111002", "DCM", "Algorithm Parameters"),
    "region": ("111030", "DCM", "Image Region"),
    "source": ("260753009", "SCT", "Source"),
    "group": ("125007", "DCM", "Measurement Group"),
}


def _fast_calc_groups(calcs, ndim, ref, units, num_cols, txt_cols, header, spacing):
    """TID 1410 groups of the calcifications, item for item as highdicom builds them.

    Code items are created once per document and shared between content
    items (pydicom Sequences do not own their items).
    """
    from . import _sr_items as it

    n = {k: it.code(*v) for k, v in _N.items()}
    status_codes: dict = {}
    sources: dict = {}
    finding = it.code(*_FINDING_CALC)
    status_name = it.code(_STATUS_NAME[0], PRIVATE_SCHEME, _STATUS_NAME[1])
    params = _PARAM_PREFIX + json.dumps(header, sort_keys=True, allow_nan=False)
    version = software_version()[:64]
    names = {c: _num_name(c) for c in num_cols}
    names = {c: (it.code(str(nm.value), str(nm.scheme_designator), str(nm.meaning)),
                 it.code(str(units[u].value), "UCUM", str(units[u].meaning)))
             for c, (nm, u) in names.items()}
    out = []
    records = calcs.to_dict("records")
    for i, rec in enumerate(records):
        cid = int(rec["calc_id"])
        g = it.container("CONTAINS", n["group"], template_id="1410")
        kids = [
            it.text("HAS OBS CONTEXT", n["tracking_id"], f"MC-{cid}"),
            it.uidref("HAS OBS CONTEXT", n["tracking_uid"], _uid_for(ref.sop_instance_uid, "calc", cid)),
            it.code_item("CONTAINS", n["finding"], finding),
        ]
        if i == 0:  # algorithm identification (and the header) once
            kids += [
                it.text("HAS CONCEPT MOD", n["algo_name"], ALGORITHM_NAME),
                it.text("HAS CONCEPT MOD", n["algo_version"], version),
                it.text("HAS CONCEPT MOD", n["algo_params"], params),
            ]
        for c in _written_columns(rec, num_cols, spacing):
            name, unit = names[c]
            kids.append(it.num("CONTAINS", name, float(rec[c]), unit))
        status = str(rec["status"])
        if status not in status_codes:
            status_codes[status] = it.code(status[:16], PRIVATE_SCHEME, status[:64])
        kids.append(it.code_item("CONTAINS", status_name, status_codes[status]))
        for c in txt_cols:
            v = rec[c]
            if v is None or (isinstance(v, float) and math.isnan(v)) or _is_number(v):
                continue
            t = str(v)
            if not t:
                continue
            kids.append(it.code_item(
                "CONTAINS", it.code((_EXTRA_PREFIX + c)[:16], PRIVATE_SCHEME, c[:64]),
                it.code(hashlib.sha1(t.encode()).hexdigest()[:16], PRIVATE_SCHEME, t[:64])))
        s = int(rec["slice"]) if ndim == 3 else None
        uid, frames = ref.instance_for_slice(s)
        key = (uid, tuple(frames or ()))
        if key not in sources:  # identical SELECTED FROM items are shared
            sources[key] = it.image("SELECTED FROM", ref.sop_class_uid, uid, frames,
                                    name=n["source"])
        src = sources[key]
        kids.append(it.scoord("CONTAINS", n["region"], "POINT",
                              [float(rec["col"]) + 0.5, float(rec["row"]) + 0.5], src))
        out.append(it.children(g, kids))
    return out


def build_sr(det: Detections, ndim: int, metadata: dict, *, deidentified: bool = False,
             fallback_key: str = "image", engine: str = "fast"):
    """Build the TID 1500 SR (a highdicom ``Comprehensive3DSR``) for ``det``.

    ``engine="fast"`` builds the per-calcification measurement groups with
    :mod:`._sr_items` (the same items as highdicom, built faster);
    ``engine="highdicom"`` builds them with highdicom's template classes
    (the reference the tests compare against).
    """
    hd = _hd()
    calcs = normalize_calcifications(det.calcifications, ndim)
    clus = normalize_clusters(det.clusters, ndim)
    ref = source_reference(metadata, ndim, fallback_key)
    evidence = source_datasets(ref, metadata, deidentified)
    units = _units()
    sp = [float(s) for s in det.spacing_mm]
    header = {"spacing_mm": sp, "image_shape": [int(s) for s in det.image_shape],
              "laterality": metadata.get("laterality"), "view": metadata.get("view"),
              "parameters": jsonable(det.params or {})}
    algo = hd.sr.AlgorithmIdentification(
        name=ALGORITHM_NAME, version=software_version()[:64],
        parameters=[_PARAM_PREFIX + json.dumps(header, sort_keys=True, allow_nan=False)])

    point_templates: dict = {}

    def region(graphic_type, rc, s):
        uid, frames = ref.instance_for_slice(s)
        data = np.column_stack([rc[:, 1] + 0.5, rc[:, 0] + 0.5]).astype(np.float64)
        key = (uid, tuple(frames or ()))
        if graphic_type == hd.sr.GraphicTypeValues.POINT and key in point_templates:
            # highdicom validates a region against the standard's IOD tables
            # (~10-40 ms each); points on the same image differ only in their
            # coordinates, so copy a validated one and set the coordinates.
            item = copy.deepcopy(point_templates[key])
            item.GraphicData = [float(v) for v in data.ravel()]
            return item
        src = hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=ref.sop_class_uid,
            referenced_sop_instance_uid=uid,
            referenced_frame_numbers=frames)
        item = hd.sr.ImageRegion(graphic_type=graphic_type, graphic_data=data, source_image=src)
        if graphic_type == hd.sr.GraphicTypeValues.POINT:
            point_templates[key] = copy.deepcopy(item)
        return item

    groups = []
    fast_groups = []
    calc_num = [c for c in calcs.columns if c not in ("status",)]
    calc_txt = [c for c in calcs.columns if c not in calc_columns(ndim)]
    status_name = _code(*_STATUS_NAME)
    if engine == "fast":
        fast_groups = _fast_calc_groups(calcs, ndim, ref, units, calc_num, calc_txt, header, sp)
    for i, c in (calcs.iterrows() if engine != "fast" else ()):
        cid = int(c["calc_id"])
        s = int(c["slice"]) if ndim == 3 else None
        rc = np.array([[float(c["row"]), float(c["col"])]])
        status = str(c["status"])
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=_uid_for(ref.sop_instance_uid, "calc", cid), identifier=f"MC-{cid}"),
            referenced_region=region(hd.sr.GraphicTypeValues.POINT, rc, s),
            finding_type=_code(*_FINDING_CALC[::2], scheme=_FINDING_CALC[1]),
            algorithm_id=algo if i == 0 else None,
            measurements=_measurements(c, _written_columns(c, calc_num, sp), units),
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                name=status_name, value=_code(status[:16], status[:64]))]
            + _text_evaluations(c, calc_txt),
        ))
    members = member_table(calcs)
    clus_num = list(clus.columns)
    clus_txt = [c for c in clus.columns if c not in cluster_columns(ndim)]
    for _, cl in clus.iterrows():
        k = int(cl["cluster_id"])
        kind, outline = cluster_outline_px(members.get(k), cl, sp)
        s = int(round(float(cl["slice"]))) if ndim == 3 else None
        if kind == "polygon":
            outline = np.vstack([outline, outline[:1]])  # closed polyline
            gt = hd.sr.GraphicTypeValues.POLYLINE
        else:
            gt = hd.sr.GraphicTypeValues.ELLIPSE
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=_uid_for(ref.sop_instance_uid, "cluster", k), identifier=f"Cluster-{k}"),
            referenced_region=region(gt, outline, s),
            finding_type=_code(*_FINDING_CLUSTER[::2], scheme=_FINDING_CLUSTER[1]),
            algorithm_id=algo,
            measurements=_measurements(cl, _written_columns(cl, clus_num, sp), units),
            qualitative_evaluations=_text_evaluations(cl, clus_txt) or None,
        ))

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=str(pydicom.uid.generate_uid(entropy_srcs=["napari-calc device"])),
            name="napari-calc", manufacturer_name="napari-calc",
            model_name=software_version()[:64]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.Mammography if hasattr(codes.SCT, "Mammography")
        else hd.sr.CodedConcept("71651007", "SCT", "Mammography"),
        # highdicom insists on >= 1 group; without any a placeholder group is
        # removed again below (the container is then left empty)
        imaging_measurements=groups or [hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(identifier="none"),
            referenced_region=region(hd.sr.GraphicTypeValues.POINT, np.zeros((1, 2)),
                                     0 if ndim == 3 else None))],
        title=codes.DCM.ImagingMeasurementReport,
    )
    series_uid, sop_uid = document_uids("tid1500", content_digest(
        frame_to_csv_text(calcs), frame_to_csv_text(clus),
        json.dumps(header, sort_keys=True), json.dumps(jsonable(metadata), sort_keys=True),
        deidentified, software_version()))
    # highdicom deep-copies and re-parses the whole content tree and searches it
    # for references (seconds for a few hundred groups); hand it the report with
    # its first item only and put the full tree in afterwards. Every region
    # references the source instance(s), which are all in `evidence`.
    root = report[0]
    full = root.ContentSequence
    pydicom.Dataset.__setattr__(root, "ContentSequence", pydicom.Sequence(list(full)[:1]))
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report,
        series_instance_uid=series_uid, series_number=9901,
        sop_instance_uid=sop_uid, instance_number=1,
        manufacturer="napari-calc", is_complete=True, is_final=False, is_verified=False,
    )
    for it in full:
        if it.get("ValueType") == "CONTAINER" and \
                it.ConceptNameCodeSequence[0].CodeValue == "126010":
            items = fast_groups + (list(it.ContentSequence) if groups else [])
            if items:
                pydicom.Dataset.__setattr__(it, "ContentSequence", pydicom.Sequence(items))
            else:
                del it.ContentSequence
    pydicom.Dataset.__setattr__(sr, "ContentSequence", full)
    sr.SeriesDescription = "napari-calc calcifications"
    sr.SoftwareVersions = software_version()[:64]
    sr.CodingSchemeIdentificationSequence = [coding_scheme_identification()]
    stamp_times(sr)
    if deidentified:
        apply_deidentification(sr)
    return sr


def write_sr(det: Detections, path, ndim: int, metadata: dict, *, deidentified: bool = False,
             salt=None, fallback_key: str | None = None) -> None:
    """Write ``<stem>.sr.dcm`` atomically.

    ``fallback_key`` (the output stem) keys the synthesised source reference
    when the metadata has neither UIDs nor a source path.
    """
    from pathlib import Path

    key = fallback_key or Path(path).name.split(".")[0]
    sr = build_sr(det, ndim, metadata, deidentified=deidentified, fallback_key=key)
    with atomic_write(path, "wb") as f:
        save_dataset(sr, f)


# --------------------------------------------------------------------------- reading


def _name(item) -> tuple[str, str, str]:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return ("", "", "")
    c = seq[0]
    return (str(c.get("CodeValue", c.get("LongCodeValue", ""))),
            str(c.get("CodingSchemeDesignator", "")), str(c.get("CodeMeaning", "")))


def _num_value(item) -> float:
    mv = item.MeasuredValueSequence[0]
    if "FloatingPointValue" in mv:
        return float(mv.FloatingPointValue)
    return float(mv.NumericValue)


def _column_of(code: tuple[str, str, str]) -> str | None:
    value, scheme, meaning = code
    for col, (v, s, _m, _u) in _STD_NUM.items():
        if value == v and scheme == s:
            return col
    if scheme == PRIVATE_SCHEME:
        for col, (v, _m, _u) in _PRIVATE_NUM.items():
            if value == v:
                return col
        if value.startswith(_EXTRA_PREFIX):
            return meaning
    return None


def _walk(seq):
    for item in seq or []:
        yield item
        yield from _walk(item.get("ContentSequence"))


def _parse_group(group) -> dict:
    rec: dict = {"_kind": None}
    for item in group.get("ContentSequence") or []:
        vt = item.get("ValueType")
        code = _name(item)
        if vt == "TEXT" and code[0] == "112039":  # Tracking Identifier
            rec["_tracking"] = str(item.TextValue)
        elif vt == "CODE" and code[0] == "121071":  # Finding
            v = item.ConceptCodeSequence[0]
            rec["_kind"] = "cluster" if v.CodeValue == _FINDING_CLUSTER[0] else (
                "calc" if v.CodeValue == _FINDING_CALC[0] else None)
        elif vt == "NUM":
            col = _column_of(code)
            if col:
                rec[col] = _num_value(item)
        elif vt == "CODE" and code[1] == PRIVATE_SCHEME:
            meaning = str(item.ConceptCodeSequence[0].CodeMeaning)
            if code[0] == _STATUS_NAME[0]:
                rec["status"] = meaning
            elif code[0].startswith(_EXTRA_PREFIX):
                rec[code[2]] = meaning
        elif vt == "SCOORD" and code[0] == "111030":  # Image Region
            rec["_scoord"] = np.asarray(item.GraphicData, dtype=float)
            refs = [x for x in _walk(item.get("ContentSequence")) if x.get("ValueType") == "IMAGE"]
            if refs:
                rs = refs[0].ReferencedSOPSequence[0]
                if "ReferencedFrameNumber" in rs:
                    fr = rs.ReferencedFrameNumber
                    rec["_frame"] = int(fr[0] if isinstance(fr, (list, pydicom.multival.MultiValue)) else fr)
        elif vt == "CONTAINER" or vt == "CODE" and code[0] == "111001":
            pass
        if vt == "TEXT" and code[0] == "111002":  # Algorithm Parameters
            t = str(item.TextValue)
            if t.startswith(_PARAM_PREFIX):
                rec["_header"] = t[len(_PARAM_PREFIX):]
        if vt == "CODE" and code[0] == "111001":
            pass
    # Algorithm identification is nested (TID 4019 items are direct children)
    return rec


def read_sr_detections(path) -> Detections:
    """Read a TID 1500 SR written by :func:`write_sr` (or a CAD SR) back.

    Exact values come from the private NUM items; when they are missing
    (an SR from another tool) positions fall back to the SCOORD centre
    (32-bit) and the spacing from the position items.
    """
    from pathlib import Path

    p = Path(path)
    try:
        ds = pydicom.dcmread(p)
    except Exception as e:  # InvalidDicomError, OSError, ...
        raise ExportError(f"not a readable DICOM file ({type(e).__name__})", p) from None
    cls = str(ds.get("SOPClassUID", ""))
    if cls == "1.2.840.10008.5.1.4.1.1.88.50":
        from .cad_sr import read_cad_sr_dataset

        return read_cad_sr_dataset(ds, p)
    if ds.get("ValueType") != "CONTAINER" or "ContentSequence" not in ds:
        raise ExportError("not a DICOM SR document", p)
    groups = [it for it in _walk(ds.ContentSequence)
              if it.get("ValueType") == "CONTAINER" and _name(it)[0] == "125007"]
    recs = [_parse_group(g) for g in groups]
    header = next((json.loads(r["_header"]) for r in recs if "_header" in r), None)
    calc_recs, clus_recs = [], []
    for r in recs:
        kind = r.pop("_kind")
        tracking = r.pop("_tracking", "")
        sc = r.pop("_scoord", None)
        frame = r.pop("_frame", None)
        r.pop("_header", None)
        if kind is None:
            continue
        if kind == "calc":
            if "calc_id" not in r and tracking.startswith("MC-"):
                r["calc_id"] = int(tracking[3:])
            if "row" not in r and sc is not None:
                r["col"], r["row"] = float(sc[0]) - 0.5, float(sc[1]) - 0.5
            if "slice" not in r and frame is not None:
                r["slice"] = frame - 1
            calc_recs.append(r)
        else:
            if "cluster_id" not in r and tracking.startswith("Cluster-"):
                r["cluster_id"] = int(tracking[8:])
            clus_recs.append(r)
    if not groups and "ContentSequence" not in ds:
        raise ExportError("SR holds no measurement report", p)
    ndim = len(header["image_shape"]) if header else (
        3 if any("slice" in r for r in calc_recs + clus_recs) else 2)
    calcs = pd.DataFrame.from_records(calc_recs) if calc_recs else \
        pd.DataFrame({c: [] for c in calc_columns(ndim)})
    clus = pd.DataFrame.from_records(clus_recs) if clus_recs else \
        pd.DataFrame({c: [] for c in cluster_columns(ndim)})
    sp_hdr = [float(v) for v in header["spacing_mm"]] if header else None
    for df, cols in ((calcs, calc_columns(ndim)), (clus, cluster_columns(ndim))):
        if sp_hdr is not None and len(df):
            # positions in mm left out because they are index x spacing exactly
            for mmc, (idx, ax) in _MM_OF.items():
                if idx in df.columns and (ax != 0 or ndim == 3):
                    fill = pd.to_numeric(df[idx], errors="coerce") * sp_hdr[ax]
                    df[mmc] = df[mmc].where(df[mmc].notna(), fill) if mmc in df.columns else fill
        for c in cols:
            if c not in df.columns:
                df[c] = "candidate" if c == "status" else np.nan
    try:
        calcs = normalize_calcifications(calcs, ndim)
        clus = normalize_clusters(clus, ndim)
    except Exception as e:
        raise ExportError(getattr(e, "reason", str(e)), p) from None
    if header:
        spacing = tuple(float(s) for s in header["spacing_mm"])
        shape = tuple(int(s) for s in header["image_shape"])
        params = dict(header.get("parameters") or {})
    else:
        from .csv_io import _infer_spacing

        spacing = _infer_spacing(calcs, clus, ndim)
        shape = ()
        params = {}
    metadata = _metadata_from_sr(ds)
    if header:
        metadata.update(laterality=header.get("laterality"), view=header.get("view"))
    return Detections(calcs, clus, spacing, shape, params, metadata)


def _metadata_from_sr(ds) -> dict:
    md: dict = {"export_source_path": str(getattr(ds, "filename", "") or "")}
    for seq_kw in ("CurrentRequestedProcedureEvidenceSequence",
                   "PertinentOtherEvidenceSequence"):
        for study in ds.get(seq_kw) or []:
            md.setdefault("study_instance_uid", str(study.StudyInstanceUID))
            for series in study.get("ReferencedSeriesSequence") or []:
                md.setdefault("series_instance_uid", str(series.SeriesInstanceUID))
                for inst in series.get("ReferencedSOPSequence") or []:
                    md.setdefault("sop_class_uid", str(inst.ReferencedSOPClassUID))
                    md.setdefault("sop_instance_uid", str(inst.ReferencedSOPInstanceUID))
    for kw, key in (("PatientName", "patient_name"), ("PatientID", "patient_id")):
        v = ds.get(kw)
        if v:
            md[key] = str(v)
    if ds.get("PatientIdentityRemoved") == "YES":
        md["deidentified"] = True
    return md
