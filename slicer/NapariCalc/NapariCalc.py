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
to every detected voxel index (i = column, j = row, k = slice). Nothing
assumes an identity matrix.

Spacing (see :meth:`NapariCalcLogic.resolve_spacing`): a spacing the user
gives wins; else, for a volume loaded from DICOM whose file is still
reachable, the spacing napari-calc's own reader finds in it (corrected for
the radiographic magnification, which Slicer does not apply); else the
node's, refused when it cannot be a mammogram's (Slicer's default 1 mm of a
PNG or TIFF without a pixel size, a writer's default 72 or 96 dpi, or
outside the range detection accepts). A spacing other than the node's is
written to the node after detection, so that the volume, the fiducials,
Slicer's rulers and the exported files agree.

The logic also runs outside the Slicer application, on the MRML classes of
``slicer-core`` from PyPI; the test suite drives it that way.
"""

from __future__ import annotations

import logging
import math
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
            "napari-calc CSV, JSON and .mrk.json files. The pixel spacing must be the real one: "
            "a volume at Slicer's default 1 mm (a PNG or TIFF without pixel size) is refused; "
            "set it in Volumes or in the Pixel spacing field. For DICOM, the spacing napari-calc "
            "reads from the file (magnification-corrected) is used when the file is reachable.")
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


#: The spacing Slicer (ITK) gives a volume whose file has no pixel size.
SLICER_DEFAULT_SPACING_MM = 1.0

#: Where to set a volume's spacing in Slicer, for the messages.
SET_SPACING_HINT = ("set the pixel size in Volumes > Volume Information > Image Spacing, or give it "
                    "(the Pixel spacing field of this module, or spacing_mm=)")


def _close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def node_spacing_problem(volume_node) -> str | None:
    """Why the node's in-plane spacing cannot be a mammogram's, or None.

    Parameters
    ----------
    volume_node : vtkMRMLScalarVolumeNode

    Returns
    -------
    str or None
        ``None`` for a plausible spacing; else the reason: Slicer's default
        1 mm (the file gave no pixel size), an image writer's default
        resolution (:data:`napari_calc.core.read.tiff.WRITER_DEFAULT_DPI`,
        which napari-calc's TIFF reader ignores too), or a spacing outside
        :data:`napari_calc.core.detect.IN_PLANE_SPACING_RANGE_MM`.
    """
    from napari_calc.core.detect import IN_PLANE_SPACING_RANGE_MM
    from napari_calc.core.read.tiff import WRITER_DEFAULT_DPI

    _, sj, si = voxel_spacing_mm(volume_node)
    if all(_close(s, SLICER_DEFAULT_SPACING_MM, 1e-9) for s in (sj, si)):
        return (f"Slicer's default ({SLICER_DEFAULT_SPACING_MM:g} mm), given when the file has no "
                "pixel size")
    lo, hi = IN_PLANE_SPACING_RANGE_MM
    if not all(lo <= s <= hi for s in (sj, si)):
        return f"not a mammogram's ({lo:g}-{hi:g} mm per pixel)"
    for dpi in WRITER_DEFAULT_DPI:
        # PNG stores pixels per metre: 72 dpi is 2835/m, 0.012 % off 25.4/72 mm
        if all(_close(s, 25.4 / dpi, 1e-3) for s in (sj, si)):
            return f"{dpi:g} dpi, an image writer's default, not a measured pixel size"
    return None


def dicom_files(volume_node) -> list[str]:
    """The DICOM files a volume node was loaded from, when they can be found.

    Looks at Slicer's DICOM database (``slicer.dicomDatabase``, in the
    application) for the node's ``DICOM.instanceUIDs`` attribute, then at the
    file names of the node's storage node. A file counts only if it exists,
    reads as a DICOM header, has the node's rows and columns and, when the
    node has instance UIDs, one of them as its SOPInstanceUID.

    Parameters
    ----------
    volume_node : vtkMRMLScalarVolumeNode

    Returns
    -------
    list of str
        The files, in the order found; empty when none is reachable.
    """
    from napari_calc.core.errors import NapariCalcError
    from napari_calc.core.read import is_dicom
    from napari_calc.core.read.dicom import read_dicom_header

    uids = set((volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()) - {"Unknown"}
    candidates = []
    db = getattr(slicer, "dicomDatabase", None)
    if db is not None:
        for uid in sorted(uids):
            try:
                candidates.append(db.fileForInstance(uid))
            except Exception:  # pragma: no cover - a database without the instance
                pass
    storage = volume_node.GetStorageNode()
    if storage is not None:
        candidates.append(storage.GetFileName())
        candidates += [storage.GetNthFileName(i) for i in range(storage.GetNumberOfFileNames())]
    cols, rows = (volume_node.GetImageData().GetDimensions()[:2]
                  if volume_node.GetImageData() is not None else (None, None))
    found = []
    for path in dict.fromkeys(c for c in candidates if c):
        if not os.path.isfile(path) or not is_dicom(path):
            continue
        try:
            ds = read_dicom_header(path)
        except NapariCalcError:
            continue
        if uids and str(ds.get("SOPInstanceUID", "")) not in uids:
            continue
        if (ds.get("Rows"), ds.get("Columns")) != (rows, cols):
            continue
        found.append(path)
    return found


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
    def volume_to_image(volume_node, invert: bool = False, spacing_mm=None, spacing_source=None):
        """A :class:`napari_calc.MammoImage` from a scalar volume node.

        Parameters
        ----------
        volume_node : vtkMRMLScalarVolumeNode
            A volume with one slice (k) is a 2-D mammogram, otherwise a
            ``(slice, row, col)`` stack.
        invert : bool
            Flip the grey scale (for MONOCHROME1 data loaded without
            inversion) so that dense is bright.
        spacing_mm : (slice_mm, row_mm, col_mm), optional
            Used instead of the IJK-to-RAS matrix's spacing (its directions
            and origin are kept); see :meth:`resolve_spacing`.
        spacing_source : str, optional
            Recorded as ``metadata["spacing_source"]``.

        Returns
        -------
        MammoImage
        """
        from napari_calc import MammoImage

        arr = slicer.util.arrayFromVolume(volume_node)  # (k, j, i)
        arr = np.array(arr, copy=True)
        if invert:
            arr = (arr.max() + arr.min()) - arr
        node_sk, node_sj, node_si = voxel_spacing_mm(volume_node)
        sk, sj, si = (node_sk, node_sj, node_si) if spacing_mm is None else map(float, spacing_mm)
        m = ijk_to_ras_matrix(volume_node)
        meta = {"source_path": None, "name": volume_node.GetName(), "modality": "MG",
                "ijk_to_ras": m.tolist(), "spacing_source": spacing_source}
        # the volume's geometry as DICOM has it (LPS), for the exports: the
        # .mrk.json then lands on the module's own points (without it, up to
        # the volume's origin and axis flips away)
        lps = np.diag([-1.0, -1.0, 1.0])
        origin = lps @ m[:3, 3]
        meta["image_orientation_patient"] = (list(lps @ (m[:3, 0] / node_si))
                                             + list(lps @ (m[:3, 1] / node_sj)))
        if arr.shape[0] == 1:
            meta["image_position_patient"] = origin.tolist()
            return MammoImage(arr[0], (sj, si), meta)
        step = lps @ (m[:3, 2] / node_sk) * sk
        meta["frame_positions_patient"] = [(origin + k * step).tolist() for k in range(arr.shape[0])]
        return MammoImage(arr, (sk, sj, si), meta)

    @staticmethod
    def resolve_spacing(volume_node, spacing_mm=None) -> tuple[tuple[float, float, float], str, str | None]:
        """The (slice, row, col) spacing to detect with, and where it is from.

        Parameters
        ----------
        volume_node : vtkMRMLScalarVolumeNode
        spacing_mm : float or sequence of float, optional
            The user's spacing: a scalar is the in-plane pixel size (row =
            col), a pair ``(row_mm, col_mm)``, a triple ``(slice_mm, row_mm,
            col_mm)`` (stacks only); the node's slice spacing is kept
            otherwise.

        Returns
        -------
        spacing : (slice_mm, row_mm, col_mm)
        source : str
            ``"user"``; the reader's ``spacing_source`` of the DICOM file
            (e.g. ``"ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"``);
            or ``"volume node"``.
        path : str or None
            The DICOM file the spacing was read from.

        Raises
        ------
        MissingSpacingError
            No ``spacing_mm``, no reachable DICOM file with a spacing, and
            the node's spacing is not a mammogram's (:func:`node_spacing_problem`):
            one line naming the volume and the reason, and how to set it.
        InvalidParameterError
            A malformed ``spacing_mm``.
        """
        from napari_calc.core.errors import MissingSpacingError
        from napari_calc.core.read.dicom import in_plane_spacing, read_dicom_header
        from napari_calc.core.read.limits import normalise_user_spacing

        sk, sj, si = voxel_spacing_mm(volume_node)
        name = volume_node.GetName()
        dims = volume_node.GetImageData().GetDimensions() if volume_node.GetImageData() else (0, 0, 1)
        if spacing_mm is not None:
            ndim = 2 if dims[2] == 1 else 3
            sp = normalise_user_spacing(spacing_mm, ndim, file_slice_mm=sk)
            return ((sk,) + tuple(sp) if ndim == 2 else tuple(sp)), "user", None
        for path in dicom_files(volume_node):
            pair, source = in_plane_spacing(read_dicom_header(path))
            if pair is not None:
                return (sk, float(pair[0]), float(pair[1])), source, path
        why = node_spacing_problem(volume_node)
        if why is not None:
            raise MissingSpacingError(
                f"volume '{name}': pixel spacing {sj:g} x {si:g} mm is {why}; detection needs the "
                f"real pixel size (a mammogram's is about 0.05-0.2 mm): {SET_SPACING_HINT}")
        return (sk, sj, si), "volume node", None

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
                progress=None, spacing_mm=None, **params):
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
        spacing_mm : float or sequence of float, optional
            Pixel spacing in mm used instead of the volume's (see
            :meth:`resolve_spacing`).
        **params
            ``napari_calc.detect`` parameters.

        Returns
        -------
        dict
            ``detections`` (napari_calc Detections), ``fiducials`` (markups
            fiducial node), ``clusters`` (list of closed-curve or ROI
            nodes), ``table`` (table node), ``spacing_mm`` (the spacing
            detected with), ``spacing_source`` and ``spacing_file`` (see
            :meth:`resolve_spacing`), ``message`` (one line saying so).

        Raises
        ------
        MissingSpacingError
            The volume's spacing is not a mammogram's and none was given;
            nothing is added to the scene and the volume is left as it was.

        Notes
        -----
        When the spacing used differs from the node's, it is written to the
        node (origin and directions kept) once detection has succeeded, so
        that the volume, the fiducials and the exports agree.
        """
        from napari_calc import detect
        from napari_calc.core.detect import PRESETS

        if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
            raise ValueError("select a scalar volume")
        merged = dict(PRESETS[preset]) if preset else {}
        merged.update(params)
        spacing, source, path = self.resolve_spacing(volume_node, spacing_mm)
        image = self.volume_to_image(volume_node, invert=invert, spacing_mm=spacing,
                                     spacing_source=source)
        det = detect(image, progress=progress, **merged)
        name = volume_node.GetName()
        sk, sj, si = spacing
        old = voxel_spacing_mm(volume_node)
        txt = " x ".join(f"{s:g}" for s in det.spacing_mm)
        origin = {"user": "given", "volume node": "the volume's"}.get(
            source, f"from {os.path.basename(path or '')} ({source})")
        message = f"'{name}': spacing {txt} mm ({origin})"
        if not all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(old, spacing)):
            volume_node.SetSpacing(si, sj, sk)
            was = " x ".join(f"{s:g}" for s in old[-len(det.spacing_mm):])
            message += f"; the volume's spacing was {was} mm and is now set to it"
        logging.info(message)
        fiducials = self.fiducials_from_detections(volume_node, det, f"{name} calcifications")
        clusters = self.cluster_nodes_from_detections(volume_node, det, f"{name} cluster")
        table = self.table_from_dataframe(det.calcifications, f"{name} calcification features")
        return {"detections": det, "fiducials": fiducials, "clusters": clusters, "table": table,
                "spacing_mm": tuple(det.spacing_mm), "spacing_source": source, "spacing_file": path,
                "message": message}

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
        self.spacingBox = qt.QDoubleSpinBox()
        self.spacingBox.setRange(0.0, 2.0)
        self.spacingBox.setDecimals(4)
        self.spacingBox.setSingleStep(0.005)
        self.spacingBox.setSpecialValueText("from the volume")  # shown at 0
        self.spacingBox.setToolTip("In-plane pixel size in mm, used instead of the volume's (and "
                                   "written to it). Leave at 'from the volume' for DICOM.")
        form.addRow("Pixel spacing (mm):", self.spacingBox)

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

        spacing = self.spacingBox.value or None
        with slicer.util.tryWithErrorDisplay("Detection failed.", waitCursor=True):
            self.last = self.logic.process(self.volumeSelector.currentNode(), preset=preset,
                                           invert=self.invertBox.checked, progress=progress,
                                           spacing_mm=spacing, **params)
            det = self.last["detections"]
            slicer.util.showStatusMessage(
                f"{len(det.calcifications)} calcifications, {len(det.clusters)} clusters; "
                f"{self.last['message']}", 10000)
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
           "make_volume_node", "ijk_to_ras_matrix", "voxel_spacing_mm", "node_spacing_problem",
           "dicom_files", "SLICER_DEFAULT_SPACING_MM", "HAVE_SLICER_GUI"]
