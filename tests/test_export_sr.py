import shutil
import subprocess

import numpy as np
import pandas as pd
import pydicom
import pytest

from napari_calc.core.export import read_detections, write_outputs
from napari_calc.core.export._dicom import SC_2D

from _export_data import assert_same_detections, dicom_metadata, make_detections

DCIODVFY = shutil.which("dciodvfy")
DSRDUMP = shutil.which("dsrdump")
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools dciodvfy not installed")
needs_dsrdump = pytest.mark.skipif(DSRDUMP is None, reason="dcmtk dsrdump not installed")

FLAVOURS = ["sr.dcm", "cad-sr.dcm"]


def _walk(seq):
    for it in seq or []:
        yield it
        yield from _walk(it.get("ContentSequence"))


def _code(it, seq="ConceptNameCodeSequence"):
    s = it.get(seq)
    return str(s[0].CodeValue) if s else None


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def exported(request, tmp_path_factory):
    nd = request.param
    d = tmp_path_factory.mktemp(f"sr{nd}")
    det = make_detections(nd, extras=True)
    paths = write_outputs(det, d, "img", formats=FLAVOURS)
    return nd, det, paths


@needs_dciodvfy
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_dciodvfy_no_errors(exported, flavour):
    _, _, paths = exported
    r = subprocess.run([DCIODVFY, str(paths[flavour])], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    errors = [line for line in out.splitlines() if "Error" in line]
    assert not errors, "\n".join(errors)
    # it really validated the IOD we claim
    expect = "Comprehensive3DSR" if flavour == "sr.dcm" else "MammographyCADSR"
    assert expect in out


@needs_dsrdump
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_dsrdump_reads(exported, flavour):
    _, det, paths = exported
    r = subprocess.run([DSRDUMP, str(paths[flavour])], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not [line for line in r.stderr.splitlines() if line.startswith(("E:", "F:"))], r.stderr
    title = "Comprehensive 3D SR Document" if flavour == "sr.dcm" else "Mammography CAD SR Document"
    assert title in r.stdout
    assert r.stdout.count("Individual Calcification") >= len(det.calcifications)


def test_tid1500_content(exported):
    nd, det, paths = exported
    ds = pydicom.dcmread(paths["sr.dcm"])
    md = det.metadata
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.StudyInstanceUID == md["study_instance_uid"]
    ev = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert ev.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == md["sop_instance_uid"]
    groups = [it for it in _walk(ds.ContentSequence)
              if it.ValueType == "CONTAINER" and _code(it) == "125007"]
    assert len(groups) == len(det.calcifications) + len(det.clusters)
    calc_groups = [g for g in groups if any(
        _code(c) == "121071" and _code(c, "ConceptCodeSequence") == "129770007"
        for c in g.ContentSequence)]
    assert len(calc_groups) == len(det.calcifications)
    first = det.calcifications.iloc[0]
    g = calc_groups[0]
    region = [c for c in g.ContentSequence if c.ValueType == "SCOORD"][0]
    assert region.GraphicType == "POINT"
    np.testing.assert_allclose(region.GraphicData, [first.col + 0.5, first.row + 0.5], atol=1e-3)
    img = region.ContentSequence[0].ReferencedSOPSequence[0]
    assert img.ReferencedSOPInstanceUID == md["sop_instance_uid"]
    if nd == 3:
        assert int(img.ReferencedFrameNumber) == int(first.slice) + 1
    nums = {_code(c): c for c in g.ContentSequence if c.ValueType == "NUM"}
    assert "81827009" in nums  # Diameter (SCT)
    dia = nums["81827009"].MeasuredValueSequence[0]
    assert dia.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
    assert float(dia.NumericValue) == pytest.approx(first.diameter_mm)
    assert "contrast" in nums
    # clusters: POLYLINE (>= 3 members) or ELLIPSE, with the count
    clus_groups = [g for g in groups if g not in calc_groups]
    kinds = []
    for g in clus_groups:
        region = [c for c in g.ContentSequence if c.ValueType == "SCOORD"][0]
        kinds.append(region.GraphicType)
        nums = {_code(c): c for c in g.ContentSequence if c.ValueType == "NUM"}
        assert "111038" in nums  # Number of calcifications
        if region.GraphicType == "POLYLINE":
            pts = np.asarray(region.GraphicData).reshape(-1, 2)
            np.testing.assert_array_equal(pts[0], pts[-1])  # closed
    assert kinds == ["POLYLINE", "ELLIPSE"]
    counts = [float(next(c for c in g.ContentSequence if _code(c) == "111038")
                    .MeasuredValueSequence[0].NumericValue) for g in clus_groups]
    assert counts == det.clusters.n_calcifications.tolist()


def test_tid1500_round_trip_exact(exported):
    nd, det, paths = exported
    back = read_detections(paths["sr.dcm"])
    assert_same_detections(det, back, nd, atol=1e-6)
    assert_same_detections(det, back, nd, atol=0)  # in fact exact (64-bit values)
    assert back.spacing_mm == det.spacing_mm and back.image_shape == det.image_shape
    assert back.params == det.params
    assert back.metadata["sop_instance_uid"] == det.metadata["sop_instance_uid"]
    assert back.metadata["laterality"] == "L"


def test_cad_sr_content(exported):
    nd, det, paths = exported
    ds = pydicom.dcmread(paths["cad-sr.dcm"])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.50"
    assert _code(ds) == "111036"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "4000"
    items = list(_walk(ds.ContentSequence))
    sif = [it for it in items if it.ValueType == "CODE" and _code(it) == "111059"]
    ind = [it for it in sif if _code(it, "ConceptCodeSequence") == "129770007"]
    clu = [it for it in sif if _code(it, "ConceptCodeSequence") == "129769006"]
    assert len(ind) == len(det.calcifications) and len(clu) == len(det.clusters)
    for f in sif:
        kids = {_code(c) for c in f.ContentSequence}
        assert {"111056", "111071", "111010", "111001", "111003"} <= kids
    for f in clu:
        members = [c for c in f.ContentSequence if _code(c) == "111059"]
        n = next(c for c in f.ContentSequence if _code(c) == "111038")
        assert len(members) == int(float(n.MeasuredValueSequence[0].NumericValue))
        assert all(m.RelationshipType == "INFERRED FROM" for m in members)
    lib = next(it for it in items if _code(it) == "111028")
    assert lib.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        det.metadata["sop_instance_uid"]
    summary = next(it for it in ds.ContentSequence if _code(it) == "111017")
    assert _code(summary, "ConceptCodeSequence") == "111242"


def test_cad_sr_reads_back_positions(exported):
    nd, det, paths = exported
    back = read_detections(paths["cad-sr.dcm"])
    a, b = det.calcifications, back.calcifications
    assert b.calc_id.tolist() == a.calc_id.tolist()
    assert b.cluster_id.tolist() == a.cluster_id.tolist()
    # SCOORD is float32: ~1e-4 px
    np.testing.assert_allclose(b.row, a.row, atol=1e-3)
    np.testing.assert_allclose(b.col, a.col, atol=1e-3)
    np.testing.assert_allclose(b.diameter_mm, a.diameter_mm, atol=1e-4)
    expect = a.status.replace({"added": "accepted"}).tolist()
    assert b.status.tolist() == expect
    if nd == 3:
        assert b.slice.tolist() == a.slice.tolist()
    assert back.clusters.n_calcifications.tolist() == det.clusters.n_calcifications.tolist()


def _certainty(finding):
    """The Certainty of Finding item of a Single Image Finding, or None."""
    got = [c for c in finding.ContentSequence if _code(c) == "111012"]
    assert len(got) <= 1
    return got[0] if got else None


def test_cad_sr_carries_scores_as_certainty_of_finding(exported):
    nd, det, paths = exported
    ds = pydicom.dcmread(paths["cad-sr.dcm"])
    sif = [it for it in _walk(ds.ContentSequence) if it.ValueType == "CODE" and _code(it) == "111059"]
    by_kind = {"129770007": [], "129769006": []}
    for f in sif:
        c = _certainty(f)
        assert c is not None and c.RelationshipType == "HAS PROPERTIES"
        mv = c.MeasuredValueSequence[0]
        assert (mv.MeasurementUnitsCodeSequence[0].CodeValue,
                mv.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator) == ("%", "UCUM")
        assert 0 <= float(mv.NumericValue) <= 100
        by_kind[_code(f, "ConceptCodeSequence")].append(float(mv.FloatingPointValue))
    calcs = det.calcifications.sort_values("calc_id")
    assert sorted(by_kind["129770007"]) == pytest.approx(sorted(100 * calcs.score), abs=1e-12)
    assert sorted(by_kind["129769006"]) == pytest.approx(sorted(100 * det.clusters.score), abs=1e-12)
    # read back: the scores again, so a reopened CAD SR keeps its clusters above threshold
    back = read_detections(paths["cad-sr.dcm"])
    np.testing.assert_allclose(back.calcifications.score, det.calcifications.score, rtol=1e-15, atol=0)
    np.testing.assert_allclose(back.clusters.score, det.clusters.score, rtol=1e-15, atol=0)


def test_cad_sr_without_a_probability_writes_no_certainty(tmp_path):
    det = make_detections(2)
    calcs = det.calcifications.copy()
    calcs["score"] = [np.nan, 1.5, -0.1, 0.0, 1.0, 0.25, 0.5]  # unknown, other scales, the bounds
    det = type(det)(calcs, det.clusters, det.spacing_mm, det.image_shape, det.params, det.metadata)
    p = write_outputs(det, tmp_path, "img", formats=["cad-sr.dcm"])
    ds = pydicom.dcmread(p["cad-sr.dcm"])
    found = {}
    for f in _walk(ds.ContentSequence):
        if f.ValueType == "CODE" and _code(f) == "111059" and \
                _code(f, "ConceptCodeSequence") == "129770007":
            c = _certainty(f)
            found[f.ObservationUID] = None if c is None else float(c.MeasuredValueSequence[0].NumericValue)
    assert sorted(v for v in found.values() if v is not None) == [0.0, 25.0, 50.0, 100.0]
    assert sum(v is None for v in found.values()) == 3
    back = read_detections(p["cad-sr.dcm"]).calcifications.set_index("calc_id").score
    want = pd.Series([np.nan, np.nan, np.nan, 0.0, 1.0, 0.25, 0.5], index=range(1, 8))
    pd.testing.assert_series_equal(back.sort_index(), want, check_names=False, check_index_type=False)


def test_cad_sr_reopened_detection_keeps_clusters(tmp_path):
    """A real detection through the CAD SR: the clusters come back with
    their scores, and their extent and area computed again from the members."""
    import napari_calc
    from napari_calc.core.phantom import make_phantom

    det = napari_calc.detect(make_phantom(seed=3).image, 0.1)
    assert len(det.clusters) >= 1
    p = write_outputs(det, tmp_path, "img", formats=["cad-sr.dcm"])
    back = read_detections(p["cad-sr.dcm"])
    a, b = det.clusters, back.clusters
    assert b.cluster_id.tolist() == a.cluster_id.tolist()
    np.testing.assert_allclose(b.score, a.score, rtol=1e-15, atol=0)
    # member positions are 32-bit SCOORDs: ~1e-4 px, i.e. 1e-5 mm
    np.testing.assert_allclose(b.max_extent_mm, a.max_extent_mm, atol=1e-4)
    np.testing.assert_allclose(b.area_mm2, a.area_mm2, atol=1e-4)


def test_non_dicom_source_gets_deterministic_reference(tmp_path):
    md = {"source_path": "/data/scan_001.tif", "modality": "OT", "laterality": "R", "view": "MLO"}
    det = make_detections(2, metadata=md)
    uids = []
    for sub in ("a", "b"):
        p = write_outputs(det, tmp_path / sub, "scan", formats=FLAVOURS)
        for f in FLAVOURS:
            ds = pydicom.dcmread(p[f])
            ref = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
                .ReferencedSOPSequence[0]
            assert ref.ReferencedSOPClassUID == SC_2D
            uids.append((ds.StudyInstanceUID, ref.ReferencedSOPInstanceUID))
    assert len(set(uids)) == 1
    back = read_detections(p["sr.dcm"])
    assert_same_detections(det, back, 2, atol=0)


def test_reproducible_with_source_date_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    det = make_detections(2)
    a = write_outputs(det, tmp_path / "a", "img", formats=FLAVOURS)
    b = write_outputs(det, tmp_path / "b", "img", formats=FLAVOURS)
    for f in FLAVOURS:
        assert a[f].read_bytes() == b[f].read_bytes()
    det.calcifications.loc[0, "status"] = "rejected"
    c = write_outputs(det, tmp_path / "c", "img", formats=FLAVOURS)
    for f in FLAVOURS:  # changed content -> a new SOP Instance UID
        assert pydicom.dcmread(c[f]).SOPInstanceUID != pydicom.dcmread(a[f]).SOPInstanceUID


def test_per_slice_instances(tmp_path):
    md = dicom_metadata(ndim=3)
    md["sop_instance_uids"] = [f"1.2.826.0.1.3680043.8.498.77{i:02d}" for i in range(20)]
    md["sop_class_uid"] = "1.2.840.10008.5.1.4.1.1.1.2"
    det = make_detections(3, metadata=md)
    p = write_outputs(det, tmp_path, "stack", formats=["sr.dcm"])
    ds = pydicom.dcmread(p["sr.dcm"])
    first = det.calcifications.iloc[0]
    region = next(it for it in _walk(ds.ContentSequence) if it.ValueType == "SCOORD")
    ref = region.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == md["sop_instance_uids"][int(first.slice)]
    assert "ReferencedFrameNumber" not in ref
    assert_same_detections(det, read_detections(p["sr.dcm"]), 3, atol=0)


def test_per_slice_instances_cad_sr_keeps_the_slices(tmp_path):
    """A CAD SR of a series (one file per slice, no frame numbers) came back
    with every calcification on slice 0."""
    md = dicom_metadata(ndim=3)
    md["sop_instance_uids"] = [f"1.2.826.0.1.3680043.8.498.77{i:02d}" for i in range(20)]
    md["sop_class_uid"] = "1.2.840.10008.5.1.4.1.1.1.2"
    det = make_detections(3, metadata=md)
    p = write_outputs(det, tmp_path, "stack", formats=["cad-sr.dcm"])
    back = read_detections(p["cad-sr.dcm"])
    a = det.calcifications.sort_values("calc_id")
    b = back.calcifications.sort_values("calc_id")
    assert b.slice.tolist() == a.slice.tolist() and len(set(a.slice)) > 1
    np.testing.assert_allclose(b.z_mm, a.z_mm)
    # cluster centres between slices: from the members, as the detection has them
    for _, k in det.clusters.iterrows():
        m = a[a.cluster_id == k.cluster_id]
        got = back.clusters.set_index("cluster_id").loc[k.cluster_id]
        assert got.slice == pytest.approx(m.slice.mean()) and got.z_mm == pytest.approx(m.z_mm.mean())


def test_empty_detections_sr(tmp_path):
    from napari_calc.core.detections import Detections

    det = Detections.empty((64, 64), (0.1, 0.1), metadata=dicom_metadata())
    p = write_outputs(det, tmp_path, "empty", formats=FLAVOURS)
    back = read_detections(p["sr.dcm"])
    assert len(back.calcifications) == 0 and len(back.clusters) == 0
    ds = pydicom.dcmread(p["cad-sr.dcm"])
    summary = next(it for it in ds.ContentSequence if _code(it) == "111017")
    assert _code(summary, "ConceptCodeSequence") == "111241"
    if DCIODVFY:
        for f in FLAVOURS:
            r = subprocess.run([DCIODVFY, str(p[f])], capture_output=True, text=True, timeout=60)
            assert "Error" not in r.stdout + r.stderr


def test_read_rejects_non_sr(tmp_path):
    from napari_calc.core.errors import NapariCalcError

    bad = tmp_path / "x.sr.dcm"
    bad.write_bytes(b"not dicom at all")
    with pytest.raises(NapariCalcError, match="x.sr.dcm"):
        read_detections(bad)


def test_bare_array_source_same_reference_in_both_flavours(tmp_path):
    det = make_detections(2, metadata={})
    p = write_outputs(det, tmp_path, "arr", formats=FLAVOURS)
    refs = set()
    for f in FLAVOURS:
        ds = pydicom.dcmread(p[f])
        ev = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        refs.add((ds.StudyInstanceUID, ev.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
    assert len(refs) == 1


def test_read_foreign_sr_is_clear_error(tmp_path):
    """An SR from another tool (no measurement groups of ours) is refused cleanly."""
    from napari_calc.core.errors import NapariCalcError

    det = make_detections(2)
    p = write_outputs(det, tmp_path, "img", formats=["cad-sr.dcm"])
    ds = pydicom.dcmread(p["cad-sr.dcm"])
    # drop our parameters: now it is "someone else's" CAD SR
    for it in _walk(ds.ContentSequence):
        if it.get("ValueType") == "TEXT" and _code(it) == "111002":
            it.TextValue = "threshold=3"
    other = tmp_path / "other.cad-sr.dcm"
    ds.save_as(other)
    with pytest.raises(NapariCalcError, match="other.cad-sr.dcm"):
        read_detections(other)


@pytest.mark.parametrize("ndim", [2, 3])
def test_fast_items_identical_to_highdicom(monkeypatch, ndim):
    """The plain-pydicom measurement groups are byte-identical to highdicom's."""
    import io

    from napari_calc.core.export.sr import build_sr

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    det = make_detections(ndim, extras=True)
    out = {}
    for engine in ("fast", "highdicom"):
        sr = build_sr(det, ndim, det.metadata, engine=engine)
        buf = io.BytesIO()
        sr.save_as(buf, enforce_file_format=True)
        out[engine] = (sr, buf.getvalue())
    fast, ref = out["fast"][0], out["highdicom"][0]
    gf = [it for it in _walk(fast.ContentSequence) if _code(it) == "125007"]
    gr = [it for it in _walk(ref.ContentSequence) if _code(it) == "125007"]
    assert len(gf) == len(gr) == len(det.calcifications) + len(det.clusters)
    for a, b in zip(gf, gr):
        assert a == b
    assert out["fast"][1] == out["highdicom"][1]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_non_ascii_names_are_encoded_as_declared(tmp_path, flavour):
    """A patient 'Müller' (any source character set: pydicom decodes it) is
    written in UTF-8 and the SR says so; it had no (0008,0005) and Latin-1
    bytes, which dciodvfy reports as invalid values. An all-ASCII SR
    declares nothing (dcmtk warns that it cannot check ISO_IR 192)."""
    md = dict(dicom_metadata(), patient_name="Müller^Jürgen", referring_physician_name="Øster^Åse")
    det = make_detections(2, metadata=md)
    path = write_outputs(det, tmp_path, "img", formats=[flavour])[flavour]
    raw = pydicom.dcmread(path)
    assert raw.SpecificCharacterSet == "ISO_IR 192"
    assert str(raw.PatientName) == "Müller^Jürgen" and str(raw.ReferringPhysicianName) == "Øster^Åse"
    assert "Müller^Jürgen".encode("utf-8") in path.read_bytes()
    plain = write_outputs(make_detections(2), tmp_path / "ascii", "img", formats=[flavour])[flavour]
    assert "SpecificCharacterSet" not in pydicom.dcmread(plain)  # the default repertoire will do
    if DCIODVFY:
        r = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (r.stdout + r.stderr).splitlines() if "Error" in line]
        assert not errors, "\n".join(errors)


def test_view_codes_are_cid_4014():
    """The views we read from ViewCodeSequence and write into the CAD SR are
    CID 4014's SNOMED CT codes (XCCL and FB had wrong codes; CV and AT, view
    modifiers of CID 4015, were written as views)."""
    from pydicom.sr.codedict import codes

    from napari_calc.core.export.cad_sr import _VIEWS
    from napari_calc.core.read.dicom import _VIEW_CODES

    cid = {getattr(codes.cid4014, n).value for n in codes.cid4014.dir()}
    assert {code for code, _ in _VIEWS.values()} <= cid
    sct = {k: v for k, v in _VIEW_CODES.items() if k.isdigit()}
    assert set(sct) <= cid
    for code, view in sct.items():  # reading a code and writing the view give the same code
        assert _VIEWS[view][0] == code
