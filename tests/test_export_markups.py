import json
from pathlib import Path

import numpy as np
import pytest

from napari_calc.core.export import write_outputs
from napari_calc.core.export.slicer_markups import SCHEMA_URL, pixel_to_lps

from _export_data import dicom_metadata, make_detections

jsonschema = pytest.importorskip("jsonschema")

_VEC3 = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
_VEC9 = {"type": "array", "items": {"type": "number"}, "minItems": 9, "maxItems": 9}

#: The required structure of Slicer's markups-schema-v1.0.3.json (the parts
#: we rely on: top-level required keys, type enum, coordinate system/units
#: enums, control point fields and their types).
MARKUPS_V103_SUBSET = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "required": ["@schema", "markups"],
    "properties": {
        "@schema": {"type": "string", "pattern": r"markups-schema-v1\.0\.3\.json#?$"},
        "markups": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["Fiducial", "Line", "Angle", "Curve", "ClosedCurve",
                                      "Plane", "ROI"]},
                    "name": {"type": "string"},
                    "coordinateSystem": {"enum": ["LPS", "RAS"]},
                    "coordinateUnits": {"anyOf": [
                        {"enum": ["mm", "um"]},
                        {"type": "array", "items": {"type": "string"}, "minItems": 3,
                         "maxItems": 3}]},
                    "locked": {"type": "boolean"},
                    "center": _VEC3, "size": _VEC3, "orientation": _VEC9,
                    "controlPoints": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "label": {"type": "string"},
                                "description": {"type": "string"},
                                "position": _VEC3,
                                "orientation": _VEC9,
                                "selected": {"type": "boolean"},
                                "locked": {"type": "boolean"},
                                "visibility": {"type": "boolean"},
                                "positionStatus": {"enum": ["undefined", "preview", "defined"]},
                            },
                        },
                    },
                    "display": {"type": "object"},
                },
            },
        },
    },
}


def _load(tmp_path, det, stem="img"):
    paths = write_outputs(det, tmp_path, stem, formats=["mrk.json"])
    assert paths["mrk.json"].name == f"{stem}.mrk.json"
    doc = json.loads(paths["mrk.json"].read_text())
    jsonschema.validate(doc, MARKUPS_V103_SUBSET)
    return doc


def test_schema_subset_rejects_bad_documents():
    # the checker itself can fail
    good = {"@schema": SCHEMA_URL, "markups": [{"type": "Fiducial", "controlPoints": [
        {"position": [1, 2, 3]}]}]}
    jsonschema.validate(good, MARKUPS_V103_SUBSET)
    for bad in (
        {"markups": []},
        {"@schema": SCHEMA_URL, "markups": [{"type": "Points"}]},
        {"@schema": SCHEMA_URL, "markups": [{"type": "Fiducial", "controlPoints": [
            {"position": [1, 2]}]}]},
        {"@schema": SCHEMA_URL, "markups": [{"type": "Fiducial", "coordinateSystem": "XYZ"}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, MARKUPS_V103_SUBSET)


def test_markups_structure_2d_without_geometry(tmp_path):
    md = dicom_metadata(with_geometry=False)
    det = make_detections(2, metadata=md)
    doc = _load(tmp_path, det)
    assert doc["@schema"] == SCHEMA_URL
    fid = doc["markups"][0]
    assert fid["type"] == "Fiducial"
    assert fid["coordinateSystem"] == "LPS" and fid["coordinateUnits"] == "mm"
    c = det.calcifications
    assert [p["label"] for p in fid["controlPoints"]] == [f"MC-{i}" for i in c.calc_id]
    pos = np.array([p["position"] for p in fid["controlPoints"]])
    # documented 2-D mapping: L = x_mm, P = y_mm, S = 0
    np.testing.assert_allclose(pos[:, 0], c.x_mm, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pos[:, 1], c.y_mm, rtol=0, atol=1e-9)
    assert np.all(pos[:, 2] == 0)
    vis = [p["visibility"] for p in fid["controlPoints"]]
    assert vis == [s != "rejected" for s in c.status]
    kinds = {m["name"]: m["type"] for m in doc["markups"][1:]}
    assert kinds == {"Cluster-1": "ClosedCurve", "Cluster-2": "ROI"}
    curve = doc["markups"][1]
    # hull of the 4 members of cluster 1: every vertex is a member position
    members = c[c.cluster_id == 1]
    mpos = np.column_stack([members.x_mm, members.y_mm, np.zeros(len(members))])
    for p in curve["controlPoints"]:
        assert np.min(np.linalg.norm(mpos - p["position"], axis=1)) < 1e-9
    assert len(curve["controlPoints"]) >= 3
    roi = doc["markups"][2]
    m2 = c[c.cluster_id == 2]
    # ROI box encloses both members
    lo = np.array(roi["center"]) - np.array(roi["size"]) / 2
    hi = np.array(roi["center"]) + np.array(roi["size"]) / 2
    assert np.all(m2.x_mm >= lo[0]) and np.all(m2.x_mm <= hi[0])
    assert np.all(m2.y_mm >= lo[1]) and np.all(m2.y_mm <= hi[1])


def test_pixel_to_lps_with_dicom_geometry():
    md = dicom_metadata()
    ipp = np.array(md["image_position_patient"])
    iop = np.array(md["image_orientation_patient"])
    sp = (0.5, 0.25)
    p = pixel_to_lps([0, 10, 0], [0, 0, 4], None, md, sp)
    np.testing.assert_allclose(p[0], ipp)
    # +10 rows -> along the second IOP triplet (0,0,-1), 10*0.5 mm
    np.testing.assert_allclose(p[1], ipp + [0, 0, -5.0])
    # +4 cols -> along the first IOP triplet (0,1,0), 4*0.25 mm
    np.testing.assert_allclose(p[2], ipp + [0, 1.0, 0])
    # 3-D: slice direction is col x row = (0,1,0)x(0,0,-1) = (-1,0,0)
    p3 = pixel_to_lps([0], [0], [3], md, (2.0, 0.5, 0.25))
    np.testing.assert_allclose(p3[0], ipp + [-6.0, 0, 0])
    # per-frame positions
    md2 = dict(md, image_position_patient=[[0, 0, 0], [5, 5, 5], [9, 9, 9]])
    p4 = pixel_to_lps([2], [0], [1], md2, (2.0, 0.5, 0.25))
    np.testing.assert_allclose(p4[0], [5, 5, 4])


@pytest.mark.parametrize("ndim", [2, 3])
def test_markups_with_geometry_land_on_image(tmp_path, ndim):
    det = make_detections(ndim)
    doc = _load(tmp_path, det)
    c = det.calcifications
    md = det.metadata
    pos = np.array([p["position"] for p in doc["markups"][0]["controlPoints"]])
    ipp = np.array(md["image_position_patient"])
    iop = np.array(md["image_orientation_patient"])
    expect = ipp + np.outer(c.x_mm, iop[:3]) + np.outer(c.y_mm, iop[3:])
    if ndim == 3:
        expect = expect + np.outer(c.z_mm, np.cross(iop[:3], iop[3:]))
    np.testing.assert_allclose(pos, expect, atol=1e-9)


def test_loads_in_slicer_storage_node_on_the_volume_grid(tmp_path):
    """The 2-D mapping: a volume with the same spacing, origin 0 and
    identity IJK->LPS directions (what Slicer gives a TIFF) puts voxel
    (i=col, j=row) exactly where the fiducials land."""
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module found is not slicer-core")
    md = dicom_metadata(with_geometry=False)
    det = make_detections(2, metadata=md)
    paths = write_outputs(det, tmp_path, "img", formats=["mrk.json"])
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLMarkupsFiducialNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(paths["mrk.json"]))
    assert storage.ReadData(node)
    ras = np.array([node.GetNthControlPointPosition(i) for i in range(node.GetNumberOfControlPoints())])
    labels = [node.GetNthControlPointLabel(i) for i in range(node.GetNumberOfControlPoints())]
    assert labels == [f"MC-{i}" for i in det.calcifications.calc_id]
    vol = slicer.vtkMRMLScalarVolumeNode()
    scene.AddNode(vol)
    row_mm, col_mm = det.spacing_mm
    vol.SetSpacing(col_mm, row_mm, 1.0)
    vol.SetOrigin(0.0, 0.0, 0.0)
    vol.SetIJKToRASDirections(-1, 0, 0, 0, -1, 0, 0, 0, 1)  # identity in LPS
    import vtk

    m = vtk.vtkMatrix4x4()
    vol.GetIJKToRASMatrix(m)
    M = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    c = det.calcifications
    ijk = np.column_stack([c.col, c.row, np.zeros(len(c)), np.ones(len(c))])
    np.testing.assert_allclose(ras, (ijk @ M.T)[:, :3], atol=1e-6)


def test_pixel_to_lps_follows_frame_positions_against_the_normal():
    """Slices may run against IOP[0:3] x IOP[3:6] (here the normal is -z and
    the frames go +z): the per-frame positions decide, also between and
    beyond slices, and they win over a single image_position_patient."""
    md = {"image_orientation_patient": [0, 1, 0, 1, 0, 0],
          "image_position_patient": [0.0, 0.0, 0.0],
          "frame_positions_patient": [[0.0, 0.0, float(k)] for k in range(5)]}
    p = pixel_to_lps([0, 0, 0, 0, 4], [0, 0, 0, 0, 2], [0, 2, 2.5, 5, 3], md, (1.0, 0.1, 0.1))
    np.testing.assert_allclose(p, [[0, 0, 0], [0, 0, 2], [0, 0, 2.5], [0, 0, 5], [0.4, 0.2, 3]],
                               atol=1e-12)
    # without the per-frame positions: along the normal from the one IPP
    single = {k: v for k, v in md.items() if k != "frame_positions_patient"}
    np.testing.assert_allclose(pixel_to_lps([0], [0], [2], single, (1.0, 0.1, 0.1)), [[0, 0, -2]])


def test_tomosynthesis_dicom_markups_at_the_frame_positions(tmp_path):
    """End to end: a phantom tomosynthesis DICOM (frames at z = 0, 1, 2, ...
    mm, orientation normal -z) read, detected and exported: each fiducial at
    its slice's z, as in the calcification table."""
    from napari_calc import detect, read_image
    from napari_calc.core.phantom import make_phantom, write_phantom

    ph = make_phantom(3, spacing_mm=0.1, n_slices=5, slice_mm=1.0, size_mm=(40, 30))
    written = write_phantom(ph, tmp_path / "ph", formats=("dicom",))
    img = read_image(written["dicom"])
    fp = np.asarray(img.metadata["frame_positions_patient"], float)
    iop = np.asarray(img.metadata["image_orientation_patient"], float)
    assert np.cross(iop[:3], iop[3:]) @ (fp[-1] - fp[0]) < 0  # the frames run against the normal
    det = detect(img)
    assert det.ndim == 3 and (det.calcifications["slice"] > 0).any()
    doc = json.loads(Path(write_outputs(det, tmp_path / "out", "ph", formats=["mrk.json"])["mrk.json"])
                     .read_text())
    pos = np.array([p["position"] for p in doc["markups"][0]["controlPoints"]])
    c = det.calcifications
    np.testing.assert_allclose(pos[:, 2], fp[c["slice"].to_numpy(), 2], atol=1e-9)
    np.testing.assert_allclose(pos[:, 2], c["z_mm"].to_numpy() + fp[0, 2], atol=1e-9)
