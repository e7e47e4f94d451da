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
