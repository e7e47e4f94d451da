"""NapariCalc: breast microcalcification detection in 3D Slicer.

A scripted module in the usual Slicer layout (module, widget, logic and test
classes in one file). All the science comes from the ``napari_calc``
package (``napari_calc.detect`` and ``napari_calc.core.export``); this file
only moves data between MRML nodes and that core.

Install into a Slicer application (see the README, "3D Slicer"):

1. In Slicer's Python console: ``slicer.util.pip_install("napari-calc")``
   (or the path of a napari-calc checkout or wheel).
2. Edit > Application Settings > Modules > Additional module paths: add the
   folder that holds this file (``slicer/NapariCalc`` in the repository),
   restart Slicer. The module appears under "Breast Imaging".

Geometry: the volume's IJK-to-RAS matrix is read from the node and applied
to every detected voxel index (i = column, j = row, k = slice); spacing
comes from the node too. Nothing assumes an identity matrix.

The logic also runs outside the Slicer application, on the MRML classes of
``slicer-core`` from PyPI; the test suite drives it that way.
"""

from __future__ import annotations

import os
import unittest

import numpy as np
import vtk

import slicer

try:  # inside the Slicer application
    import qt  # noqa: F401
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )

    HAVE_SLICER_GUI = True
except ImportError:  # headless slicer-core: no Qt, no module framework
    HAVE_SLICER_GUI = False

    class ScriptedLoadableModule:  # minimal stand-ins with the same roles
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self):
            pass

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=0):
            pass


MODULE_TITLE = "NapariCalc"


# --------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------
class NapariCalc(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent=None):
        ScriptedLoadableModule.__init__(self, parent)
        if parent is None:
            return
        parent.title = "Microcalcifications (napari-calc)"
        parent.categories = ["Breast Imaging"]
        parent.dependencies = []
        parent.contributors = ["napari-calc developers"]
        parent.helpText = (
            "Detect breast microcalcifications and clusters on a mammogram (one-slice volume) "
            "or a tomosynthesis volume with the napari-calc core, as a fiducial list, one "
            "closed curve or ROI per cluster, and a feature table. Import and export "
            "napari-calc CSV, JSON and .mrk.json files.")
        parent.acknowledgementText = "Uses napari-calc (BSD-3-Clause)."


# --------------------------------------------------------------------------
# Logic
# --------------------------------------------------------------------------
def ijk_to_ras_matrix(volume_node) -> np.ndarray:
    """The volume's IJK-to-RAS matrix as a 4x4 numpy array."""
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def voxel_spacing_mm(volume_node) -> tuple[float, float, float]:
    """(slice, row, col) spacing in mm: the lengths of the IJK-to-RAS columns."""
    m = ijk_to_ras_matrix(volume_node)
    si, sj, sk = (float(np.linalg.norm(m[:3, a])) for a in range(3))
    return sk, sj, si


class NapariCalcLogic(ScriptedLoadableModuleLogic):
    """Detection on MRML volumes, and conversion to and from MRML nodes.

    Parameters
    ----------
    scene : vtkMRMLScene, optional
        Where new nodes go (default: ``slicer.mrmlScene``).
    """

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.scene = scene if scene is not None else getattr(slicer, "mrmlScene", None)
        if self.scene is None:
            raise ValueError("no MRML scene: pass one (slicer.vtkMRMLScene())")

    # ---- volume -> detections ----------------------------------------
    @staticmethod
    def volume_to_image(volume_node, invert: bool = False):
        """A :class:`napari_calc.MammoImage` from a scalar volume node.

        A volume with one slice (k) is a 2-D mammogram, otherwise a
        ``(slice, row, col)`` stack. Spacing comes from the IJK-to-RAS
        matrix. ``invert`` flips the grey scale (for MONOCHROME1 data
        loaded without inversion) so that dense is bright.
        """
        from napari_calc import MammoImage

        arr = slicer.util.arrayFromVolume(volume_node)  # (k, j, i)
        arr = np.array(arr, copy=True)
        if invert:
            arr = (arr.max() + arr.min()) - arr
        sk, sj, si = voxel_spacing_mm(volume_node)
        m = ijk_to_ras_matrix(volume_node)
        meta = {"source_path": None, "name": volume_node.GetName(), "modality": "MG",
                "ijk_to_ras": m.tolist()}
        # the volume's geometry as DICOM has it (LPS), for the exports: the
        # .mrk.json then lands on the module's own points (without it, up to
        # the volume's origin and axis flips away)
        lps = np.diag([-1.0, -1.0, 1.0])
        origin = lps @ m[:3, 3]
        meta["image_orientation_patient"] = list(lps @ (m[:3, 0] / si)) + list(lps @ (m[:3, 1] / sj))
        if arr.shape[0] == 1:
            meta["image_position_patient"] = origin.tolist()
            return MammoImage(arr[0], (sj, si), meta)
        step = lps @ m[:3, 2]
        meta["frame_positions_patient"] = [(origin + k * step).tolist() for k in range(arr.shape[0])]
        return MammoImage(arr, (sk, sj, si), meta)

    @staticmethod
    def ras_positions(volume_node, calcs) -> np.ndarray:
        """RAS (mm) of each calcification: IJK-to-RAS applied to
        (i=col, j=row, k=slice)."""
        m = ijk_to_ras_matrix(volume_node)
        n = len(calcs)
        k = calcs["slice"].to_numpy(float) if "slice" in calcs else np.zeros(n)
        ijk1 = np.column_stack([calcs["col"].to_numpy(float), calcs["row"].to_numpy(float), k,
                                np.ones(n)])
        return (ijk1 @ m.T)[:, :3]

    def process(self, volume_node, *, preset: str | None = None, invert: bool = False,
                progress=None, **params):
        """Detect on ``volume_node`` and add the result nodes to the scene.

        Parameters
        ----------
        volume_node : vtkMRMLScalarVolumeNode
        preset : str, optional
            A key of ``napari_calc.core.detect.PRESETS`` (same presets as
            the napari panel); ``params`` override it.
        invert : bool
            Flip the grey scale first (MONOCHROME1 loaded as is).
        progress : callable(fraction, message), optional
        **params
            ``napari_calc.detect`` parameters.

        Returns
        -------
        dict
            ``detections`` (napari_calc Detections), ``fiducials`` (markups
            fiducial node), ``clusters`` (list of closed-curve or ROI
            nodes), ``table`` (table node).
        """
        from napari_calc import detect
        from napari_calc.core.detect import PRESETS

        if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
            raise ValueError("select a scalar volume")
        merged = dict(PRESETS[preset]) if preset else {}
        merged.update(params)
        image = self.volume_to_image(volume_node, invert=invert)
        det = detect(image, progress=progress, **merged)
        name = volume_node.GetName()
        fiducials = self.fiducials_from_detections(volume_node, det, f"{name} calcifications")
        clusters = self.cluster_nodes_from_detections(volume_node, det, f"{name} cluster")
        table = self.table_from_dataframe(det.calcifications, f"{name} calcification features")
        return {"detections": det, "fiducials": fiducials, "clusters": clusters, "table": table}

    # ---- detections -> nodes -------------------------------------------
    def _add(self, cls_name, name):
        node = getattr(slicer, cls_name)()
        node.SetName(name)
        self.scene.AddNode(node)
        return node

    def fiducials_from_detections(self, volume_node, det, name):
        """A fiducial node, one control point per calcification labelled
        ``MC-<calc_id>`` at its RAS position (rejected ones hidden)."""
        node = self._add("vtkMRMLMarkupsFiducialNode", name)
        calcs = det.calcifications
        ras = self.ras_positions(volume_node, calcs)
        was = node.StartModify()
        for i, (cid, pos) in enumerate(zip(calcs["calc_id"].to_numpy(), ras)):
            node.AddControlPoint(vtk.vtkVector3d(*pos), f"MC-{int(cid)}")
            row = calcs.iloc[i]
            node.SetNthControlPointDescription(
                i, f"score {row['score']:.3f}, diameter {row['diameter_mm']:.2f} mm, "
                   f"cluster {int(row['cluster_id'])}, {row['status']}")
            node.SetNthControlPointLocked(i, True)
            if row["status"] == "rejected":
                node.SetNthControlPointVisibility(i, False)
        node.EndModify(was)
        return node

    def cluster_nodes_from_detections(self, volume_node, det, prefix):
        """One closed curve (convex hull of the members) per cluster, or an
        ROI box when the members are fewer than three or collinear."""
        from napari_calc.core.export._common import cluster_outline_px, member_table

        m = ijk_to_ras_matrix(volume_node)
        members = member_table(det.calcifications)
        nodes = []
        for _, cl in det.clusters.iterrows():
            cid = int(cl["cluster_id"])
            g = members.get(cid)
            kind, outline = cluster_outline_px(g, cl, det.spacing_mm)
            k = float(cl["slice"]) if "slice" in cl else 0.0
            label = f"{prefix} {cid} (n={int(cl['n_calcifications'])}, {cl['max_extent_mm']:.1f} mm)"
            ijk1 = np.column_stack([outline[:, 1], outline[:, 0], np.full(len(outline), k),
                                    np.ones(len(outline))])
            ras = (ijk1 @ m.T)[:, :3]
            if kind == "polygon":
                node = self._add("vtkMRMLMarkupsClosedCurveNode", label)
                for p in ras:
                    node.AddControlPoint(vtk.vtkVector3d(*p))
            else:
                node = self._add("vtkMRMLMarkupsROINode", label)
                lo, hi = ras.min(axis=0), ras.max(axis=0)
                node.SetCenter(*((lo + hi) / 2))
                node.SetSize(*np.maximum(hi - lo, 1e-3))
            nodes.append(node)
        return nodes

    def table_from_dataframe(self, df, name):
        """A table node with one column per DataFrame column."""
        node = self._add("vtkMRMLTableNode", name)
        table = node.GetTable()
        for col in df.columns:
            values = df[col]
            if values.dtype.kind in "iuf":
                arr = vtk.vtkDoubleArray()
                arr.SetName(str(col))
                for v in values.to_numpy(float):
                    arr.InsertNextValue(float(v))
            else:
                arr = vtk.vtkStringArray()
                arr.SetName(str(col))
                for v in values.astype(str):
                    arr.InsertNextValue(v)
            table.AddColumn(arr)
        node.Modified()
        return node

    # ---- import / export of napari-calc files --------------------------
    def export(self, det, out_dir, stem, formats=("csv", "json", "mrk.json")):
        """Write ``det`` with the napari-calc exporters (atomic writes)."""
        from napari_calc.core.export import write_outputs

        return write_outputs(det, out_dir, stem, formats=formats)

    def import_file(self, path, volume_node):
        """Load a napari-calc CSV or JSON (or a .mrk.json through Slicer's
        own markups storage node) onto ``volume_node``'s geometry."""
        path = os.fspath(path)
        if path.endswith(".mrk.json"):
            node = self._add("vtkMRMLMarkupsFiducialNode", os.path.basename(path))
            storage = self._add("vtkMRMLMarkupsJsonStorageNode", f"{node.GetName()} storage")
            storage.SetFileName(path)
            if not storage.ReadData(node):
                raise ValueError(f"{path}: Slicer could not read this markups file")
            return {"fiducials": node}
        from napari_calc.core.export import read_detections

        det = read_detections(path)
        name = os.path.basename(path)
        return {"detections": det,
                "fiducials": self.fiducials_from_detections(volume_node, det, name),
                "clusters": self.cluster_nodes_from_detections(volume_node, det, name),
                "table": self.table_from_dataframe(det.calcifications, f"{name} features")}

    @staticmethod
    def save_markups(node, path):
        """Save a markups node as .mrk.json with Slicer's storage node."""
        storage = slicer.vtkMRMLMarkupsJsonStorageNode()
        node.GetScene().AddNode(storage)
        storage.SetFileName(os.fspath(path))
        if not storage.WriteData(node):
            raise OSError(f"{path}: could not write markups")
        return storage


# --------------------------------------------------------------------------
# Widget (Slicer application only)
# --------------------------------------------------------------------------
class NapariCalcWidget(ScriptedLoadableModuleWidget):
    """Parameters and presets as in the napari panel, Apply, progress,
    import and export."""

    def setup(self):  # pragma: no cover - needs the Slicer application
        ScriptedLoadableModuleWidget.setup(self)
        import ctk
        import qt

        from napari_calc.core.detect import PRESETS, DetectionParams

        self.logic = NapariCalcLogic()
        self.last = None
        box = ctk.ctkCollapsibleButton()
        box.text = "Detect calcifications"
        self.layout.addWidget(box)
        form = qt.QFormLayout(box)

        self.volumeSelector = slicer.qMRMLNodeComboBox()
        self.volumeSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.volumeSelector.noneEnabled = False
        self.volumeSelector.setMRMLScene(slicer.mrmlScene)
        self.volumeSelector.setToolTip("Mammogram (one slice) or tomosynthesis volume")
        form.addRow("Image:", self.volumeSelector)

        self.presetBox = qt.QComboBox()
        self.presetBox.addItems(["Custom"] + list(PRESETS))
        form.addRow("Preset:", self.presetBox)

        d = DetectionParams()
        self.fields = {}
        for key, label, lo, hi, step, tip in [
            ("min_diameter_mm", "Min diameter (mm)", 0.02, 5, 0.01, "Smallest calcification looked for"),
            ("max_diameter_mm", "Max diameter (mm)", 0.05, 10, 0.05, "Largest calcification looked for"),
            ("threshold", "Threshold (noise SD)", 0.5, 50, 0.5, "DoG response over local noise"),
            ("nms_radius_mm", "Min distance (mm)", 0.0, 5, 0.05, "Two detections are never closer"),
            ("cluster_radius_mm", "Cluster radius (mm)", 0.5, 50, 0.1, "1 cm² disc by default"),
        ]:
            w = qt.QDoubleSpinBox()
            w.setRange(lo, hi)
            w.setSingleStep(step)
            w.setDecimals(3)
            w.setValue(getattr(d, key))
            w.setToolTip(tip)
            form.addRow(label + ":", w)
            self.fields[key] = w
        self.invertBox = qt.QCheckBox("Invert grey scale (MONOCHROME1 loaded as is)")
        form.addRow(self.invertBox)

        def apply_preset(name):
            if name in PRESETS:
                for k, v in PRESETS[name].items():
                    if k in self.fields:
                        self.fields[k].setValue(v)

        self.presetBox.connect("currentTextChanged(QString)", apply_preset)

        self.applyButton = qt.QPushButton("Apply")
        form.addRow(self.applyButton)
        self.progress = qt.QProgressBar()
        form.addRow(self.progress)
        self.applyButton.connect("clicked(bool)", self.onApply)

        io = ctk.ctkCollapsibleButton()
        io.text = "Import / export"
        self.layout.addWidget(io)
        row = qt.QHBoxLayout(io)
        imp = qt.QPushButton("Import CSV / JSON / .mrk.json...")
        exp = qt.QPushButton("Export...")
        row.addWidget(imp)
        row.addWidget(exp)
        imp.connect("clicked(bool)", self.onImport)
        exp.connect("clicked(bool)", self.onExport)
        self.layout.addStretch(1)

    def onApply(self):  # pragma: no cover
        import qt

        params = {k: w.value for k, w in self.fields.items()}
        preset = self.presetBox.currentText
        preset = None if preset == "Custom" else preset

        def progress(f, msg):
            self.progress.setValue(int(100 * f))
            slicer.app.processEvents()

        with slicer.util.tryWithErrorDisplay("Detection failed.", waitCursor=True):
            self.last = self.logic.process(self.volumeSelector.currentNode(), preset=preset,
                                           invert=self.invertBox.checked, progress=progress,
                                           **params)
            det = self.last["detections"]
            slicer.util.showStatusMessage(
                f"{len(det.calcifications)} calcifications, {len(det.clusters)} clusters", 5000)
        qt.QApplication.processEvents()

    def onImport(self):  # pragma: no cover
        import qt

        path = qt.QFileDialog.getOpenFileName(None, "Import napari-calc results", "",
                                              "napari-calc (*.csv *.json)")
        if path:
            with slicer.util.tryWithErrorDisplay("Import failed."):
                self.logic.import_file(path, self.volumeSelector.currentNode())

    def onExport(self):  # pragma: no cover
        import qt

        if not self.last:
            slicer.util.errorDisplay("Run the detection first.")
            return
        folder = qt.QFileDialog.getExistingDirectory(None, "Export to folder")
        if folder:
            with slicer.util.tryWithErrorDisplay("Export failed."):
                stem = self.volumeSelector.currentNode().GetName()
                self.logic.export(self.last["detections"], folder, stem)


# --------------------------------------------------------------------------
# Test (run by Slicer's self-test; the pytest suite drives the same logic)
# --------------------------------------------------------------------------
class NapariCalcTest(ScriptedLoadableModuleTest):
    """Detection on a phantom volume with a non-identity IJK-to-RAS matrix."""

    def setUp(self):
        self.scene = getattr(slicer, "mrmlScene", None) or slicer.vtkMRMLScene()
        if hasattr(self.scene, "Clear"):
            self.scene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_positions_follow_ijk_to_ras()

    def test_positions_follow_ijk_to_ras(self):
        from napari_calc.core.phantom import make_phantom

        ph = make_phantom(seed=2, spacing_mm=0.07)
        vol = make_volume_node(self.scene, ph.image.pixels, spacing=(0.07, 0.07, 1.0),
                               origin=(12.5, -30.0, 4.0), flip_axis=0)
        out = NapariCalcLogic(self.scene).process(vol)
        det = out["detections"]
        self.assertGreater(len(det.calcifications), 0)
        expected = NapariCalcLogic.ras_positions(vol, det.calcifications)
        got = np.array([out["fiducials"].GetNthControlPointPosition(i)
                        for i in range(out["fiducials"].GetNumberOfControlPoints())])
        self.assertLess(float(np.abs(got - expected).max()), 1e-6)


def make_volume_node(scene, pixels, *, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                     flip_axis=None, name="mammogram"):
    """A scalar volume node holding ``pixels`` ((row, col) or (slice, row,
    col)) with the given (i, j, k) spacing, origin and, optionally, one IJK
    axis flipped (a non-identity IJK-to-RAS direction)."""
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    scene.AddNode(node)
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[None]
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(arr))
    directions = np.eye(3)
    if flip_axis is not None:
        directions[:, flip_axis] *= -1
    m = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            m.SetElement(r, c, directions[r, c] * spacing[c])
        m.SetElement(r, 3, origin[r])
    node.SetIJKToRASMatrix(m)
    return node


__all__ = ["NapariCalc", "NapariCalcLogic", "NapariCalcWidget", "NapariCalcTest",
           "make_volume_node", "ijk_to_ras_matrix", "voxel_spacing_mm", "HAVE_SLICER_GUI"]
