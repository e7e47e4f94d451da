import json
import shutil
import subprocess

import pydicom
import pytest

from napari_calc.core.export import FORMATS, read_detections, write_outputs
from napari_calc.core.export.deidentify import deidentify_metadata, remap_uid

from _export_data import PATIENT, assert_same_detections, dicom_metadata, make_detections

ALL = [f for f in FORMATS if f != "csv"]
UID_KEYS = ("study_instance_uid", "series_instance_uid", "sop_instance_uid",
            "frame_of_reference_uid")


def _forbidden(md):
    """Byte strings that must not appear in a de-identified export."""
    vals = set()
    for k, v in PATIENT.items():
        vals.add(str(v))
        if k.endswith("_name"):
            vals.update(p for p in str(v).split("^") if len(p) > 2)
    vals.add("1958")  # birth year in any date format
    vals.add("2024-03-11")
    vals.add(md["source_path"])
    vals.add("Doe_Janet")  # the file name holds the patient's name
    for k in UID_KEYS:
        vals.add(md[k])
    # one-letter values (sex "F") occur in any file; checked structurally below
    return [v.encode() for v in vals if len(v) > 2]


@pytest.mark.parametrize("ndim", [2, 3])
def test_deidentified_export_has_no_patient_attributes(tmp_path, ndim):
    md = dicom_metadata(ndim=ndim)
    det = make_detections(ndim, metadata=md)
    paths = write_outputs(det, tmp_path, "case001", formats=ALL, deidentify=True)
    assert set(paths) == {"csv", "clusters.csv", *ALL}
    bad = _forbidden(md)
    for name, p in paths.items():
        data = p.read_bytes()
        found = [b.decode() for b in bad if b in data]
        assert not found, f"{name} contains {found}"
    # the SRs say so and carry dummy dates only
    for f in ("sr.dcm", "cad-sr.dcm"):
        ds = pydicom.dcmread(paths[f])
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PatientName == "" and ds.PatientID == "" and ds.PatientBirthDate == ""
        assert ds.PatientSex == ""
        assert ds.ContentDate == "19000101"
        assert "InstanceCreationDate" not in ds
        if shutil.which("dciodvfy"):  # still a valid object
            r = subprocess.run(["dciodvfy", str(paths[f])], capture_output=True, text=True,
                               timeout=60)
            assert "Error" not in r.stdout + r.stderr, r.stderr
    img = json.loads(paths["json"].read_text())["image"]
    assert not set(img) & set(PATIENT) and "source_path" not in img
    # review can continue on the de-identified SR
    assert_same_detections(det, read_detections(paths["sr.dcm"]), ndim, atol=0)


def test_uids_remapped_consistently(tmp_path):
    md = dicom_metadata()
    det = make_detections(2, metadata=md)
    a = write_outputs(det, tmp_path / "a", "case001", formats=ALL, deidentify=True)
    # a second image of the same study, exported in another call
    md2 = dict(md, sop_instance_uid=md["sop_instance_uid"] + ".2",
               series_instance_uid=md["series_instance_uid"] + ".2")
    b = write_outputs(make_detections(2, metadata=md2), tmp_path / "b", "case002",
                      formats=["json", "sr.dcm"], deidentify=True)
    ja = json.loads(a["json"].read_text())["image"]
    jb = json.loads(b["json"].read_text())["image"]
    sr = pydicom.dcmread(a["sr.dcm"])
    cad = pydicom.dcmread(a["cad-sr.dcm"])
    new_study = remap_uid(md["study_instance_uid"])
    new_sop = remap_uid(md["sop_instance_uid"])
    assert new_study != md["study_instance_uid"]
    assert ja["study_instance_uid"] == sr.StudyInstanceUID == cad.StudyInstanceUID == new_study
    assert jb["study_instance_uid"] == new_study  # same study -> same new UID across files
    for ds in (sr, cad):
        ref = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
            .ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == new_sop == ja["sop_instance_uid"]
    assert jb["sop_instance_uid"] != ja["sop_instance_uid"]
    assert ja["sop_class_uid"] == md["sop_class_uid"]  # not identifying, kept
    # a different salt gives a different mapping; the same salt the same one
    assert remap_uid(md["study_instance_uid"], salt="s1") != new_study
    assert remap_uid(md["study_instance_uid"], salt="s1") == remap_uid(md["study_instance_uid"], "s1")
    assert pydicom.uid.UID(new_study).is_valid


def test_biopsy_export_keeps_identifiers(tmp_path):
    md = dicom_metadata()
    det = make_detections(2, metadata=md)
    paths = write_outputs(det, tmp_path, "img", formats=ALL)
    sr = pydicom.dcmread(paths["sr.dcm"])
    assert sr.PatientID == md["patient_id"] and str(sr.PatientName) == md["patient_name"]
    assert sr.StudyInstanceUID == md["study_instance_uid"]
    assert sr.AccessionNumber == md["accession_number"]
    assert "PatientIdentityRemoved" not in sr
    img = json.loads(paths["json"].read_text())["image"]
    assert img["patient_id"] == md["patient_id"] and img["source_path"] == md["source_path"]


def test_deidentify_metadata_allowlist():
    md = dicom_metadata()
    md["institution_name"] = "St Elsewhere"
    md["operators_name"] = "Tech^Tina"
    out = deidentify_metadata(md)
    assert not set(out) & {"institution_name", "operators_name", "source_path", *PATIENT}
    assert out["laterality"] == "L" and out["view"] == "CC" and out["deidentified"] is True
    assert out["study_instance_uid"] == remap_uid(md["study_instance_uid"])
