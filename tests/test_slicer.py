"""The 3D Slicer module, run on the real MRML classes of slicer-core (PyPI).

No Slicer class is mocked: the scene, volume, markups, table and markups
JSON storage nodes are slicer-core's own.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' module found is not slicer-core", allow_module_level=True)

import napari_calc  # noqa: E402
from napari_calc.core.export import write_outputs  # noqa: E402
from napari_calc.core.phantom import make_phantom  # noqa: E402

MODULE = Path(__file__).resolve().parents[1] / "slicer" / "NapariCalc" / "NapariCalc.py"


@pytest.fixture(scope="module")
def mod():
    spec = importlib.util.spec_from_file_location("NapariCalc", MODULE)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=11, spacing_mm=0.07)


@pytest.fixture(scope="module")
def scene():
    return slicer.vtkMRMLScene()


def _positions(node):
    return np.array([node.GetNthControlPointPosition(i) for i in range(node.GetNumberOfControlPoints())])


def _read_markups(scene, path):
    """Slicer's own markups storage node reading ``path``: the node."""
    back = slicer.vtkMRMLMarkupsFiducialNode()
    scene.AddNode(back)
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(back)
    return back


def _ras_to_lps(ras):
    return np.asarray(ras) * [-1.0, -1.0, 1.0]


@pytest.fixture(scope="module")
def processed(mod, scene, phantom):
    # spacing 0.07 mm, an origin offset and a flipped axis (i runs to -R)
    vol = mod.make_volume_node(scene, phantom.image.pixels, spacing=(0.07, 0.07, 1.0),
                               origin=(12.5, -30.0, 4.0), flip_axis=0)
    out = mod.NapariCalcLogic(scene).process(vol)
    return vol, out


def test_module_classes_present(mod):
    for name in ("NapariCalc", "NapariCalcWidget", "NapariCalcLogic", "NapariCalcTest"):
        assert hasattr(mod, name)


def test_fiducials_at_ijk_to_ras(mod, processed, phantom):
    vol, out = processed
    m = mod.ijk_to_ras_matrix(vol)
    assert not np.allclose(m, np.eye(4))
    assert m[0, 0] == pytest.approx(-0.07) and m[1, 1] == pytest.approx(0.07)
    det = out["detections"]
    c = det.calcifications
    assert len(c) > 0
    # detection used the node's spacing, not pixel units
    assert det.spacing_mm == pytest.approx((0.07, 0.07))
    expected = (np.column_stack([c["col"], c["row"], np.zeros(len(c)), np.ones(len(c))]) @ m.T)[:, :3]
    got = _positions(out["fiducials"])
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-6
    labels = [out["fiducials"].GetNthControlPointLabel(i) for i in range(len(c))]
    assert labels == [f"MC-{i}" for i in c["calc_id"]]
    # same detections as napari_calc.detect on the array
    ref = napari_calc.detect(phantom.image.pixels, spacing_mm=0.07)
    assert ref.calcifications[["row", "col"]].equals(c[["row", "col"]])


def test_cluster_nodes_and_table(processed):
    vol, out = processed
    det = out["detections"]
    assert len(out["clusters"]) == len(det.clusters) > 0
    for node in out["clusters"]:
        assert node.GetClassName() in ("vtkMRMLMarkupsClosedCurveNode", "vtkMRMLMarkupsROINode")
    table = out["table"].GetTable()
    assert table.GetNumberOfRows() == len(det.calcifications)
    names = [table.GetColumn(i).GetName() for i in range(table.GetNumberOfColumns())]
    assert names == list(det.calcifications.columns)


def test_markups_storage_round_trip(mod, processed, scene, tmp_path):
    vol, out = processed
    path = tmp_path / "fiducials.mrk.json"
    mod.NapariCalcLogic.save_markups(out["fiducials"], path)
    doc = json.loads(path.read_text())
    assert doc["markups"][0]["type"] == "Fiducial"
    back = _read_markups(scene, path)
    assert np.abs(_positions(back) - _positions(out["fiducials"])).max() <= 1e-6


def test_napari_side_export_lands_on_the_same_points(mod, processed, scene, tmp_path):
    """Our own .mrk.json writer (napari side), given the DICOM geometry that
    matches the volume, loads in Slicer's storage node at the module's points."""
    vol, out = processed
    m = mod.ijk_to_ras_matrix(vol)
    lps = np.diag([-1.0, -1.0, 1.0])
    image = mod.NapariCalcLogic.volume_to_image(vol)
    image.metadata.update(
        image_position_patient=(lps @ m[:3, 3]).tolist(),
        # IOP: direction of increasing column index (i), then of increasing row index (j)
        image_orientation_patient=list(lps @ (m[:3, 0] / 0.07)) + list(lps @ (m[:3, 1] / 0.07)),
    )
    det = napari_calc.detect(image)
    paths = write_outputs(det, tmp_path, "same-image", formats=("csv", "mrk.json"))
    back = _read_markups(scene, Path(paths["mrk.json"]))
    got = _positions(back)
    want = _positions(out["fiducials"])
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-6
    labels = [back.GetNthControlPointLabel(i) for i in range(back.GetNumberOfControlPoints())]
    assert labels == [out["fiducials"].GetNthControlPointLabel(i) for i in range(len(labels))]


def test_module_export_lands_on_the_module_points(mod, scene, processed, tmp_path):
    """The module's own export (no geometry filled in by hand) came back up
    to 172 mm away from its fiducials: the volume's origin and flipped axis
    were not passed to the markups writer."""
    vol, out = processed
    logic = mod.NapariCalcLogic(scene)
    paths = logic.export(out["detections"], tmp_path, "module", formats=("csv", "mrk.json"))
    got = _positions(_read_markups(scene, paths["mrk.json"]))
    assert np.abs(got - _positions(out["fiducials"])).max() <= 1e-6
    # a stack with a flipped row axis and an origin: every slice too
    ph = make_phantom(seed=4, spacing_mm=0.1)
    tomo = mod.make_volume_node(scene, np.stack([ph.image.pixels] * 3), spacing=(0.1, 0.1, 1.5),
                                origin=(3.0, 7.0, -10.0), flip_axis=1)
    res = logic.process(tomo)
    paths = logic.export(res["detections"], tmp_path, "tomo", formats=("mrk.json",))
    got = _positions(_read_markups(scene, paths["mrk.json"]))
    assert len(got) > 0 and np.abs(got - _positions(res["fiducials"])).max() <= 1e-6


def test_import_csv_onto_volume(mod, processed, scene, tmp_path):
    vol, out = processed
    paths = write_outputs(out["detections"], tmp_path, "exported", formats=("csv",))
    logic = mod.NapariCalcLogic(scene)
    again = logic.import_file(paths["csv"], vol)
    assert np.abs(_positions(again["fiducials"]) - _positions(out["fiducials"])).max() <= 1e-6


def test_tomosynthesis_volume(mod, scene):
    ph = make_phantom(seed=4, spacing_mm=0.1)
    stack = np.stack([ph.image.pixels] * 3)
    vol = mod.make_volume_node(scene, stack, spacing=(0.1, 0.1, 1.5), origin=(0, 0, -10), flip_axis=1)
    out = mod.NapariCalcLogic(scene).process(vol)
    det = out["detections"]
    assert det.spacing_mm == pytest.approx((1.5, 0.1, 0.1))
    c = det.calcifications
    m = mod.ijk_to_ras_matrix(vol)
    expected = (np.column_stack([c["col"], c["row"], c["slice"], np.ones(len(c))]) @ m.T)[:, :3]
    assert np.abs(_positions(out["fiducials"]) - expected).max() <= 1e-6


def test_builtin_self_test_runs(mod):
    t = mod.NapariCalcTest()
    t.scene = slicer.vtkMRMLScene()
    t.test_positions_follow_ijk_to_ras()


# ---------------------------------------------------------------- spacing

def _result_nodes(scene):
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


@pytest.mark.parametrize("pixel_mm,why", [
    (1.0, "Slicer's default"),                 # a PNG / TIFF without a pixel size
    (25.4 / 72, "72 dpi"),                     # a writer's default resolution
    (5.0, "not a mammogram's (0.005-2 mm"),    # outside what detection accepts
])
def test_implausible_volume_spacing_refused(mod, scene, phantom, pixel_mm, why):
    """Slicer gives a PNG/TIFF without pixel size 1 mm pixels; the module
    detected on them as if real (sizes and 1 cm² clusters 10-20x off)."""
    from napari_calc.core.errors import MissingSpacingError

    vol = mod.make_volume_node(scene, phantom.image.pixels, spacing=(pixel_mm, pixel_mm, 1.0),
                               name=f"png at {pixel_mm:g}")
    before = _result_nodes(scene)
    with pytest.raises(MissingSpacingError) as info:
        mod.NapariCalcLogic(scene).process(vol)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"volume 'png at {pixel_mm:g}'" in msg and why in msg
    assert "Volumes > Volume Information > Image Spacing" in msg and "spacing_mm" in msg
    # nothing added, the volume left as it was
    assert _result_nodes(scene) == before
    assert mod.voxel_spacing_mm(vol) == pytest.approx((1.0, pixel_mm, pixel_mm))


def test_spacing_override_is_used_and_written_to_the_volume(mod, scene, phantom, tmp_path):
    vol = mod.make_volume_node(scene, phantom.image.pixels, spacing=(1.0, 1.0, 1.0),
                               origin=(12.5, -30.0, 4.0), flip_axis=0)
    logic = mod.NapariCalcLogic(scene)
    out = logic.process(vol, spacing_mm=0.07)
    det = out["detections"]
    assert det.spacing_mm == pytest.approx((0.07, 0.07))
    ref = napari_calc.detect(phantom.image.pixels, spacing_mm=0.07)
    assert len(ref.calcifications) > 0
    assert ref.calcifications[["row", "col"]].equals(det.calcifications[["row", "col"]])
    # the volume now has that spacing, origin and axis flip kept: fiducials,
    # volume and the exported .mrk.json agree
    m = mod.ijk_to_ras_matrix(vol)
    assert np.diag(m)[:3] == pytest.approx((-0.07, 0.07, 1.0))
    assert out["spacing_source"] == "user" and out["spacing_file"] is None
    assert m[:3, 3] == pytest.approx((12.5, -30.0, 4.0))
    c = det.calcifications
    expected = (np.column_stack([c["col"], c["row"], np.zeros(len(c)), np.ones(len(c))]) @ m.T)[:, :3]
    assert np.abs(_positions(out["fiducials"]) - expected).max() <= 1e-6
    paths = logic.export(det, tmp_path, "override", formats=("mrk.json",))
    got = _positions(_read_markups(scene, paths["mrk.json"]))
    assert np.abs(got - _positions(out["fiducials"])).max() <= 1e-6
    assert "0.07 x 0.07 mm (given)" in out["message"] and "was 1 x 1 mm" in out["message"]


def test_spacing_override_keeps_the_stack_slice_spacing(mod, scene, tmp_path):
    ph = make_phantom(seed=4, spacing_mm=0.1)
    tomo = mod.make_volume_node(scene, np.stack([ph.image.pixels] * 3), spacing=(1.0, 1.0, 1.5),
                                origin=(3.0, 7.0, -10.0), flip_axis=1)
    logic = mod.NapariCalcLogic(scene)
    out = logic.process(tomo, spacing_mm=0.1)
    assert out["detections"].spacing_mm == pytest.approx((1.5, 0.1, 0.1))
    assert mod.voxel_spacing_mm(tomo) == pytest.approx((1.5, 0.1, 0.1))
    paths = logic.export(out["detections"], tmp_path, "tomo-override", formats=("mrk.json",))
    got = _positions(_read_markups(scene, paths["mrk.json"]))
    assert len(got) > 0 and np.abs(got - _positions(out["fiducials"])).max() <= 1e-6


def _dicom_volume(mod, scene, pixels, path, *, node_mm, uid=None, name="mg"):
    """A volume as Slicer's DICOM module leaves it: instance UIDs attribute
    and an archetype storage node on the file."""
    vol = mod.make_volume_node(scene, pixels, spacing=(node_mm, node_mm, 1.0), name=name)
    if uid is not None:
        vol.SetAttribute("DICOM.instanceUIDs", uid)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    vol.SetAndObserveStorageNodeID(storage.GetID())
    return vol


@pytest.mark.parametrize("node_mm", [0.084, 1.0])  # ImagerPixelSpacing as is; none read
def test_dicom_volume_uses_the_readers_magnification_corrected_spacing(mod, scene, phantom, tmp_path,
                                                                       node_mm):
    from dicom_factory import make_mammo_dicom

    path = tmp_path / "mg.dcm"
    ds = make_mammo_dicom(path, phantom.image.pixels, imager_pixel_spacing=(0.084, 0.084),
                          magnification=1.2)
    vol = _dicom_volume(mod, scene, phantom.image.pixels, path, node_mm=node_mm,
                        uid=str(ds.SOPInstanceUID))
    out = mod.NapariCalcLogic(scene).process(vol)
    det = out["detections"]
    assert det.spacing_mm == pytest.approx((0.07, 0.07))  # 0.084 / 1.2, at the breast
    assert mod.dicom_files(vol) == [str(path)]
    assert out["spacing_source"] == "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
    assert out["spacing_file"] == str(path) and "mg.dcm" in out["message"]
    ref = napari_calc.detect(napari_calc.read_image(path))
    assert ref.spacing_mm == pytest.approx(det.spacing_mm)
    assert ref.calcifications[["row", "col"]].equals(det.calcifications[["row", "col"]])
    assert mod.voxel_spacing_mm(vol)[1:] == pytest.approx((0.07, 0.07))


def test_dicom_volume_without_its_file_keeps_the_node_spacing(mod, scene, phantom, tmp_path):
    from dicom_factory import make_mammo_dicom

    from napari_calc.core.errors import MissingSpacingError

    pixels = phantom.image.pixels
    other = tmp_path / "other.dcm"  # another image's file (another SOP instance)
    make_mammo_dicom(other, pixels, imager_pixel_spacing=(0.084, 0.084), magnification=1.2)
    small = tmp_path / "small.dcm"  # this UID but not this volume's size
    ds_small = make_mammo_dicom(small, pixels[:200, :300], imager_pixel_spacing=(0.084, 0.084),
                                magnification=1.2)
    # unreachable and at Slicer's default spacing: refused, as any 1 mm volume
    lost = _dicom_volume(mod, scene, pixels, tmp_path / "gone.dcm", node_mm=1.0, uid="1.2.3.4",
                         name="lost")
    with pytest.raises(MissingSpacingError, match="volume 'lost'"):
        mod.NapariCalcLogic(scene).process(lost)
    # unreachable, another image's or another size: the node's spacing
    cases = [
        _dicom_volume(mod, scene, pixels, tmp_path / "moved-away.dcm", node_mm=0.084, uid="1.2.3.4"),
        _dicom_volume(mod, scene, pixels, other, node_mm=0.084, uid="1.2.3.4"),
        _dicom_volume(mod, scene, pixels, small, node_mm=0.084, uid=str(ds_small.SOPInstanceUID)),
    ]
    for vol in cases:
        out = mod.NapariCalcLogic(scene).process(vol)
        assert out["detections"].spacing_mm == pytest.approx((0.084, 0.084))
        assert mod.voxel_spacing_mm(vol)[1:] == pytest.approx((0.084, 0.084))
        assert out["spacing_source"] == "volume node" and out["spacing_file"] is None
        assert mod.dicom_files(vol) == []
