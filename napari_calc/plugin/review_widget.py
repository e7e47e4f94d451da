"""The "Review calcifications" dock widget: a thin Qt view on
:class:`napari_calc.core.review.ReviewSession`.

All review logic (status changes, labels, add/delete/move, undo/redo,
navigation order, clustering, autosave) lives in the Qt-free session; this
panel turns keys, clicks and table selections into session calls, and after
every session change pushes the session's table into the Points layer
(``features``, colours, ``shown``) and the clusters Shapes layer in bulk.

Keyboard shortcuts (bound on the calcifications layer and on the viewer, so
they work with the focus on the canvas; the panel's tables pass them on too,
so they keep working after a click on a row):

==========================  =============================================
A                           accept the current candidate
R                           reject it
N / Space                   next candidate (score order, above threshold)
P / Backspace               previous candidate
C                           next cluster (Shift-C: previous)
U / Ctrl-Z                  undo
Ctrl-Shift-Z / Ctrl-Y       redo
Delete                      delete the current candidate
==========================  =============================================
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, ComboBox, FloatSlider, LineEdit, PushButton
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt, QTimer
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGridLayout,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableView,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import NapariCalcError
from ..core.review import DISTRIBUTIONS, MORPHOLOGIES, SUSPICION, ReviewSession, sidecar_path_for
from ._elide import elide_combo
from ._keys import pass_keys_on
from ._scroll import PanelScroll, screen_height
from .layers import (
    STATUS_COLORS,
    clusters_of_features,
    detections_from_layers,
    find_result_layers,
    hide_placeholder_point,
    is_calc_layer,
    point_colors,
    update_points_layer,
    update_shapes_layer,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["ReviewWidget", "SHORTCUTS", "DataFrameModel", "under_review"]

#: The calcifications layers a review panel is on now: layer -> the panel (weak).
_UNDER_REVIEW: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _real(layer):
    """The layer behind napari's public-only proxy (plugin widgets get those)."""
    return getattr(layer, "__wrapped__", layer)


def under_review(layer) -> bool:
    """Whether a review panel is on ``layer`` now (it then carries its
    review over to a new detection run on that layer itself)."""
    if layer is None:
        return False
    ref = _UNDER_REVIEW.get(_real(layer))
    panel = ref() if ref is not None else None
    return panel is not None and panel.layer is not None and _real(panel.layer) is _real(layer)

#: (keys, action name, description) shown in the panel and bound to the keymaps.
SHORTCUTS = [
    (("A",), "accept", "accept"),
    (("R",), "reject", "reject"),
    (("N", "Space"), "next", "next candidate"),
    (("P", "Backspace"), "previous", "previous candidate"),
    (("C",), "next_cluster", "next cluster"),
    (("Shift-C",), "previous_cluster", "previous cluster"),
    (("U", "Control-Z"), "undo", "undo"),
    (("Control-Shift-Z", "Control-Y"), "redo", "redo"),
    (("Delete",), "delete", "delete candidate"),
]

CALC_TABLE_COLUMNS = ["calc_id", "slice", "score", "status", "diameter_mm", "cnr", "cluster_id", "morphology",
                      "suspicion"]
#: Short column headers for the tables (keys are the feature columns).
HEADERS = {"calc_id": "id", "diameter_mm": "⌀ mm", "cnr": "CNR", "cluster_id": "cluster",
           "morphology": "morphology", "suspicion": "flag", "n_calcifications": "n",
           "max_extent_mm": "extent mm", "area_mm2": "area mm²", "slice": "slice"}
CLUSTER_TABLE_COLUMNS = ["cluster_id", "slice", "n_calcifications", "max_extent_mm", "area_mm2", "score"]
#: Field of view (mm) the view zooms to when jumping to a candidate.
FOCUS_FIELD_MM = 12.0
CLUSTER_MARGIN_MM = 4.0
#: Screens at least this tall show the list of keyboard shortcuts unfolded.
TALL_SCREEN_PX = 1000


class DataFrameModel(QAbstractTableModel):
    """A read-only, sortable Qt model over a DataFrame (vectorised).

    Rows shown are ``df.iloc[order]``; sorting and filtering only permute an
    index array, so a 20,000-row table stays fast.
    """

    def __init__(self, columns, parent=None):
        super().__init__(parent)
        self._cols = list(columns)
        self._df = pd.DataFrame({c: [] for c in self._cols})
        self._order = np.zeros(0, dtype=np.int64)
        self._keep = None
        self._sort = (None, Qt.AscendingOrder)
        self._cache = {}

    # data
    def set_frame(self, df: pd.DataFrame, keep: np.ndarray | None = None) -> None:
        self.beginResetModel()
        self._df = df.reset_index(drop=True)
        self._keep = None if keep is None else np.asarray(keep, dtype=bool)
        self._cols_present = [c for c in self._cols if c in self._df.columns]
        self._cache = {c: self._df[c].to_numpy() for c in self._cols_present}
        self._reorder()
        self.endResetModel()

    def _reorder(self) -> None:
        n = len(self._df)
        idx = np.arange(n) if self._keep is None else np.flatnonzero(self._keep)
        col, order = self._sort
        if col is not None and col in self._cache and len(idx):
            vals = self._cache[col][idx]
            desc = order == Qt.DescendingOrder
            if desc:  # ties keep the row order (as N and C walk them), not reversed
                vals = vals[::-1]
            try:
                o = np.argsort(vals, kind="stable")
            except TypeError:
                o = np.argsort(vals.astype(str), kind="stable")
            if desc:
                o = (len(vals) - 1) - o[::-1]
            idx = idx[o]
        self._order = idx

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self._order)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(getattr(self, "_cols_present", self._cols))

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if role != Qt.DisplayRole:
            return None
        if orientation == Qt.Horizontal:
            cols = getattr(self, "_cols_present", self._cols)
            return HEADERS.get(cols[section], cols[section]) if section < len(cols) else None
        return None

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid() or role not in (Qt.DisplayRole, Qt.TextAlignmentRole, Qt.ForegroundRole):
            return None
        c = self._cols_present[index.column()]
        if role == Qt.ForegroundRole:
            if c != "status":
                return None
            rgba = STATUS_COLORS.get(str(self._cache[c][self._order[index.row()]]))
            return None if rgba is None else QBrush(QColor.fromRgbF(*rgba[:3], 1.0))
        if role == Qt.TextAlignmentRole:
            return int(Qt.AlignRight | Qt.AlignVCenter) if self._cache[c].dtype.kind in "iuf" \
                else int(Qt.AlignLeft | Qt.AlignVCenter)
        v = self._cache[c][self._order[index.row()]]
        if isinstance(v, (float, np.floating)):
            if not np.isfinite(v):
                return ""
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    def set_sort(self, name: str, order=Qt.AscendingOrder) -> None:
        """Sort by column ``name`` (kept across :meth:`set_frame`)."""
        self.layoutAboutToBeChanged.emit()
        self._sort = (name, order)
        self._reorder()
        self.layoutChanged.emit()

    def sort_section(self) -> tuple[int, object]:
        """(header section, order) of the current sort, -1 when none."""
        cols = getattr(self, "_cols_present", self._cols)
        name, order = self._sort
        return (cols.index(name) if name in cols else -1), order

    def sort(self, column, order=Qt.AscendingOrder):
        cols = getattr(self, "_cols_present", self._cols)
        if column < 0 or column >= len(cols):
            return
        self.layoutAboutToBeChanged.emit()
        self._sort = (cols[column], order)
        self._reorder()
        self.layoutChanged.emit()

    # lookups
    def position_of_row(self, row: int) -> int:
        """DataFrame position shown in table row ``row``."""
        return int(self._order[row])

    def value(self, row: int, column: str):
        return self._cache[column][self._order[row]]

    def row_of(self, column: str, value) -> int | None:
        """Table row showing the record whose ``column`` equals ``value``."""
        if column not in self._cache or not len(self._order):
            return None
        hit = np.flatnonzero(self._cache[column][self._order] == value)
        return int(hit[0]) if len(hit) else None


#: The info line when nothing is under review.
NO_REVIEW_TEXT = "Run 'Detect calcifications' first, or choose a calcifications layer."


def carried_over_text(summary: dict | None) -> str:
    """What :meth:`ReviewSession.start_over` did, for the panel ('' when nothing)."""
    if not summary or not any(summary.values()):
        return ""
    return (f"review carried over to the new run: {summary['matched']} decision(s) on matching "
            f"candidates, {summary['kept_as_added']} accepted calcification(s) it did not find kept as "
            f"added, {summary['dropped']} rejected or labelled candidate(s) it no longer proposes dropped")


def _unwrap(obj):
    """The object behind napari's PublicOnlyProxy (plugin widgets get proxies)."""
    return getattr(obj, "__wrapped__", obj)


def _same(a, b) -> bool:
    """Identity of two layers, looking through napari's proxies."""
    return _unwrap(a) is _unwrap(b)


def _camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9 on)."""
    scene = getattr(viewer, "scene", None)
    cam = getattr(scene, "camera", None) if scene is not None else None
    return cam if cam is not None else viewer.camera


def _canvas_size(viewer) -> tuple[int, int]:
    """Canvas (height, width) in screen pixels."""
    canvas = getattr(viewer, "canvas", None)
    size = getattr(canvas, "size", None) if canvas is not None and not callable(canvas) else None
    if size is None:
        size = getattr(viewer, "_canvas_size", (600, 600))
    h, w = (int(v) for v in tuple(size)[:2])
    return h, w


def _make_table(model) -> QTableView:
    t = QTableView()
    t.setModel(model)
    t.setSortingEnabled(True)
    t.setSelectionBehavior(QAbstractItemView.SelectRows)
    t.setSelectionMode(QAbstractItemView.SingleSelection)
    t.setEditTriggers(QAbstractItemView.NoEditTriggers)
    t.verticalHeader().setVisible(False)
    t.verticalHeader().setDefaultSectionSize(20)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.Interactive)
    t.horizontalHeader().setStretchLastSection(True)
    t.horizontalHeader().setDefaultSectionSize(60)
    t.horizontalHeader().setMinimumSectionSize(36)
    t.setMinimumHeight(150)
    t.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
    return t


class ReviewWidget(QWidget):
    """Dock widget: triage, label and edit detected calcifications.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari.

    Attributes
    ----------
    session : ReviewSession or None
        The review of the current calcifications layer.
    layer : napari.layers.Points or None
        The calcifications layer under review.
    current_id : int or None
        calc_id of the current candidate.
    current_cluster : int or None
        cluster_id of the current cluster.
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session: ReviewSession | None = None
        self.layer = None
        self.shapes = None
        self.current_id: int | None = None
        self.current_cluster: int | None = None
        self._unsubscribe = None
        self._syncing = False
        self._setting_labels = False
        self._selecting_row = False
        self._removing_ids: list[int] = []
        self._nav_from: int | None = None  # the candidate N / P go on from after C
        self._run = None
        #: ``f(layer, detections) -> path or None``: where the review of a
        #: layer is autosaved, when the caller decides (the worklist: in its
        #: batch folder); None (or a None answer): the project folder rule.
        self.sidecar_resolver = None
        self._bound_keys: list[tuple[object, str]] = []
        self._threshold_timer = QTimer(self)
        self._threshold_timer.setSingleShot(True)
        self._threshold_timer.setInterval(250)
        self._threshold_timer.timeout.connect(self._commit_threshold)

        # ---- widgets (magicgui) ----------------------------------------
        self.layer_combo = ComboBox(choices=self._layer_choices, nullable=True,
                                    tooltip="Calcifications (Points) layer to review.")
        self.annotator = LineEdit(value=os.environ.get("NAPARI_CALC_ANNOTATOR", ""),
                                  tooltip="Your name; recorded with every review action.")
        self.project_dir = LineEdit(value="", tooltip="Folder for the autosave files. Empty: next to "
                                    "each image (images without a file are then not autosaved).")
        self.project_btn = PushButton(text="Choose…", tooltip="Choose the project folder.")
        self.project_btn.clicked.connect(self._choose_project_dir)
        self.threshold = FloatSlider(min=0.0, max=1.0, step=0.01, value=0.5, readout=True,
                                     tooltip="Candidates scoring below this are hidden (accepted and "
                                             "added ones always show).")
        self.advance = CheckBox(text="Go to next after accept/reject", value=True)
        self.morphology = ComboBox(choices=[""] + list(MORPHOLOGIES), tooltip="BI-RADS morphology")
        self.distribution = ComboBox(choices=[""] + list(DISTRIBUTIONS), tooltip="BI-RADS distribution")
        self.suspicion = ComboBox(choices=[""] + list(SUSPICION), tooltip="Benign or suspicious")
        self.label_cluster_btn = PushButton(text="Apply labels to cluster",
                                            tooltip="Give every calcification of the current cluster "
                                                    "these labels.")
        self.add_btn = PushButton(text="Add (click) ✚", tooltip="Click on the image to add a "
                                  "calcification the detector missed (status 'added').")
        self.add_btn.native.setCheckable(True)
        self.btns = {}
        for name, text in [("accept", "Accept (A)"), ("reject", "Reject (R)"),
                           ("previous", "◀ Prev (P)"), ("next", "Next (N) ▶"),
                           ("next_cluster", "Cluster (C) ▶"), ("delete", "Delete (Del)"),
                           ("undo", "Undo (U)"), ("redo", "Redo (Ctrl-Y)")]:
            b = PushButton(text=text)
            b.clicked.connect(lambda *_, n=name: self.do(n))
            self.btns[name] = b
        self.info = QLabel(NO_REVIEW_TEXT)
        self.info.setWordWrap(True)
        self.autosave_label = QLabel("")
        self.autosave_label.setWordWrap(True)
        self.current_label = QLabel("")
        self.current_label.setWordWrap(True)

        # ---- tables ----------------------------------------------------
        self.calc_model = DataFrameModel(CALC_TABLE_COLUMNS, self)
        self.cluster_model = DataFrameModel(CLUSTER_TABLE_COLUMNS, self)
        self.calc_table = _make_table(self.calc_model)
        self.cluster_table = _make_table(self.cluster_model)
        widths = {"calc_id": 46, "slice": 40, "score": 54, "status": 76, "diameter_mm": 50, "cnr": 54,
                  "cluster_id": 52, "n_calcifications": 40}
        self._widths = widths
        self.calc_model.modelReset.connect(lambda: self._fit_columns(self.calc_table, self.calc_model))
        self.cluster_model.modelReset.connect(lambda: self._fit_columns(self.cluster_table, self.cluster_model))
        self.calc_model.set_sort("score", Qt.DescendingOrder)
        self.cluster_model.set_sort("score", Qt.DescendingOrder)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.calc_table, "Candidates")
        self.tabs.addTab(self.cluster_table, "Clusters")

        # ---- layout ----------------------------------------------------
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        body = QWidget()
        self.scroll = PanelScroll(body)  # fits a short screen: scrolls there
        outer.addWidget(self.scroll)
        lay = QVBoxLayout(body)
        lay.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        # the layer under review across the whole panel: its name, which
        # ends in " calcifications", was cut off beside a label
        combo = self.layer_combo.native
        combo.setPlaceholderText("Calcifications layer to review")
        elide_combo(combo)  # longer still: shortened in the middle
        form.addRow(combo)
        form.addRow("Annotator", self.annotator.native)
        prow = QWidget()
        pl = QHBoxLayout(prow)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.project_dir.native, stretch=1)
        pl.addWidget(self.project_btn.native)
        form.addRow("Project folder", prow)
        form.addRow("Score threshold", self.threshold.native)
        lay.addLayout(form)
        lay.addWidget(self.autosave_label)
        grid = QGridLayout()
        grid.setSpacing(3)
        order = [["accept", "reject", "delete"], ["previous", "next", "next_cluster"], ["undo", "redo"]]
        for i, names in enumerate(order):
            for j, name in enumerate(names):
                grid.addWidget(self.btns[name].native, i, j)
        grid.addWidget(self.add_btn.native, 2, 2)
        lay.addLayout(grid)
        lay.addWidget(self.advance.native)
        lab_box = QGroupBox("Labels of the current candidate")
        lf = QGridLayout(lab_box)
        lf.setContentsMargins(4, 2, 4, 2)
        lf.setSpacing(3)
        lf.addWidget(QLabel("Morphology"), 0, 0)
        lf.addWidget(self.morphology.native, 0, 1, 1, 3)
        lf.addWidget(QLabel("Distribution"), 1, 0)
        lf.addWidget(self.distribution.native, 1, 1)
        lf.addWidget(QLabel("Flag"), 1, 2)
        lf.addWidget(self.suspicion.native, 1, 3)
        lf.addWidget(self.label_cluster_btn.native, 2, 0, 1, 4)
        lay.addWidget(self.current_label)
        lay.addWidget(lab_box)
        lay.addWidget(self.tabs, stretch=1)
        keys = QLabel(self._shortcut_text())
        keys.setWordWrap(True)
        keys.setTextFormat(Qt.RichText)
        keys_box = QGroupBox()
        kl = QVBoxLayout(keys_box)
        kl.setContentsMargins(4, 2, 4, 2)
        # the list folds away, for a taller table on a short screen
        self.keys_toggle = QToolButton()
        self.keys_toggle.setText("Keyboard shortcuts")
        self.keys_toggle.setToolTip("They work with the image or a table of this panel focused.")
        self.keys_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.keys_toggle.setAutoRaise(True)
        self.keys_toggle.setCheckable(True)
        self._keys = keys
        self.keys_toggle.toggled.connect(self._show_keys)
        # folded on a short screen (a 1280x800 laptop): the table has the room
        avail = screen_height()
        self.keys_toggle.setChecked(avail is None or avail >= TALL_SCREEN_PX)
        self._show_keys(self.keys_toggle.isChecked())
        kl.addWidget(self.keys_toggle)
        kl.addWidget(keys)
        lay.addWidget(keys_box)
        lay.addWidget(self.info)

        # ---- connections -----------------------------------------------
        self.layer_combo.changed.connect(self._on_layer_combo)
        self.annotator.changed.connect(self._on_annotator)
        self.project_dir.native.editingFinished.connect(self._on_project_dir)
        self.threshold.changed.connect(self._on_threshold)
        for w in (self.morphology, self.distribution, self.suspicion):
            w.changed.connect(self._on_label_changed)
        self.label_cluster_btn.clicked.connect(self._label_cluster)
        self.add_btn.native.toggled.connect(self._on_add_toggled)
        self.calc_table.selectionModel().currentRowChanged.connect(self._on_calc_row)
        self.cluster_table.selectionModel().currentRowChanged.connect(self._on_cluster_row)
        self.calc_table.clicked.connect(lambda idx: self._on_calc_row(idx, None, force=True))
        self.cluster_table.clicked.connect(lambda idx: self._on_cluster_row(idx, None, force=True))
        # a click on a row leaves the focus in the table, which took A, N,
        # Space... for itself: the tables pass the review shortcuts on
        pass_keys_on((self.calc_table, self.cluster_table),
                     {k: (lambda a=action: self.do(a)) for keys, action, _ in SHORTCUTS for k in keys}, self)
        ev = self.viewer.layers.events
        ev.inserted.connect(self._on_layer_inserted)
        ev.removed.connect(self._on_layer_removed)
        ev.renamed.connect(self._on_list_renamed)
        self._bind_viewer_keys()
        self._update_buttons()
        self.layer_combo.reset_choices()
        if self.layer_combo.value is not None:
            self.attach(self.layer_combo.value)

    # ------------------------------------------------------------------ helpers
    def _fit_columns(self, table, model) -> None:
        cols = getattr(model, "_cols_present", [])
        key = tuple(cols)
        if getattr(table, "_napari_calc_cols", None) == key:
            return
        table._napari_calc_cols = key
        hdr = table.horizontalHeader()
        for i, c in enumerate(cols):
            # wide enough for its header and the sort arrow (cut off before: "scor▾", "clust")
            hdr.resizeSection(i, max(self._widths.get(c, 60), hdr.sectionSizeHint(i)))

    def _show_keys(self, on: bool) -> None:
        """Unfold (or fold) the list of keyboard shortcuts."""
        self._keys.setVisible(on)
        self.keys_toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    @staticmethod
    def _shortcut_text() -> str:
        items = [f"<b>{' / '.join(k.replace('Control', 'Ctrl') for k in keys)}</b>&nbsp;{desc}"
                 for keys, _, desc in SHORTCUTS]
        return "With the image or a table focused: " + " &nbsp;·&nbsp; ".join(items) + \
            ". <br>Add mode: click on the image to add a missed calcification."

    def _layer_choices(self, *_):
        return [(lay.name, lay) for lay in self.viewer.layers if is_calc_layer(lay)]

    def _reset_layer_choices(self, *_) -> None:
        """Rebuild the layer combo's choices, the layer under review still chosen.

        The combo tells its choices apart by name: once the layer under
        review was renamed, its old name was not among the new choices, so
        magicgui chose "none" and said so, and the panel let go of the
        review. The choice is kept by identity instead, under the new name.
        """
        combo = self.layer_combo
        with combo.changed.blocked():
            combo.reset_choices()
            if self.layer is not None and not _same(combo.value, self.layer):
                mine = next((c for c in combo.choices if c is not None and _same(c, self.layer)), None)
                if mine is not None:
                    combo.value = mine

    def _on_layer_renamed(self, event=None) -> None:
        """The layer under review was renamed: the combo shows the new name now."""
        self._reset_layer_choices()

    def _on_list_renamed(self, event=None) -> None:
        """A layer in the viewer was renamed: when it is another
        calcifications layer, the combo lists it under its new name now, not
        at the next change of the layer list. (The layer under review has a
        connection of its own, which also holds while it is out of the
        viewer.)"""
        # by iteration: indexing a plugin's viewer.layers gives a proxy
        lay = next((x for i, x in enumerate(self.viewer.layers) if i == getattr(event, "index", None)), None)
        if lay is not None and is_calc_layer(lay) and not _same(lay, self.layer):
            self._reset_layer_choices()

    def _clusters_layer_of(self, points):
        """The clusters (Shapes) layer of the calcifications layer ``points``.

        Found by its name (``"<image> clusters"``) and, when the user renamed
        it, as the clusters layer of the same image (of the same detection
        run when there are several); None when there is none, or no telling.
        """
        def meta(lay):
            return lay.metadata.get("napari_calc") or {}

        src = meta(points).get("source_layer")
        if not src:
            return None
        by_name = find_result_layers(self.viewer, src)[1]
        if by_name is not None:
            return by_name
        mates = [lay for lay in self.viewer.layers if type(lay).__name__ == "Shapes"
                 and meta(lay).get("kind") == "clusters" and meta(lay).get("source_layer") == src]
        same_run = [lay for lay in mates if meta(lay).get("run") == meta(points).get("run")]
        for found in (same_run, mates):
            if len(found) == 1:
                return found[0]
        return None

    def _on_layer_inserted(self, event=None):
        self._reset_layer_choices()
        lay = getattr(event, "value", None)
        if lay is not None and is_calc_layer(lay):
            if _same(self.layer_combo.value, lay):
                self.attach(lay)
            else:
                self.layer_combo.value = lay  # -> attach

    def _on_layer_removed(self, event=None):
        lay = getattr(event, "value", None)
        if lay is not None and _same(lay, self.layer):
            self.detach()
        elif lay is not None and _same(lay, self.shapes):
            self.shapes = None
        self._reset_layer_choices()

    def _on_layer_combo(self, lay):
        if not _same(lay, self.layer):
            if lay is None:
                self.detach()
            else:
                self.attach(lay)

    # ------------------------------------------------------------------ session
    def _choose_project_dir(self, *_):
        d = QFileDialog.getExistingDirectory(self, "Project folder for review autosaves",
                                             self.project_dir.value or os.getcwd())
        if d:
            self.set_project_dir(d)

    def set_project_dir(self, path) -> None:
        """Keep autosaves in ``path`` (empty: next to the images). A review
        under way moves there (a review saved there before is kept as
        ``.bak``); with nothing reviewed yet, one saved there is restored."""
        self.project_dir.value = "" if path in (None, "") else os.fspath(path)
        self._on_project_dir()

    def _sidecar_for(self, det):
        if self.sidecar_resolver is not None:
            chosen = self.sidecar_resolver(self.layer, det)
            if chosen is not None:
                return chosen
        proj = str(self.project_dir.value or "").strip()
        proj = os.path.abspath(os.path.expanduser(proj)) if proj else None
        # the image; else the export the layers were reopened from (a DICOM
        # SR cannot hold the image's path): its review is saved beside it
        src = det.metadata.get("source_path") or det.metadata.get("export_path")
        if not src and proj is not None:
            # an image without a file (the sample): name it after the image layer
            name = det.metadata.get("name") or (self.layer.metadata.get("napari_calc") or {}).get(
                "source_layer") or "image"
            src = os.path.join(proj, f"{name}")
        return sidecar_path_for(src, proj) if src else None

    def attach(self, layer, previous: pd.DataFrame | None = None) -> None:
        """Review ``layer`` (a napari-calc calcifications Points layer).

        Opens its :class:`ReviewSession`, restoring a previous review from
        the autosave file when one exists for this image.
        """
        self.detach()
        self.layer = layer
        _UNDER_REVIEW[_real(layer)] = weakref.ref(self)
        hide_placeholder_point(layer)  # also for layers opened from exports
        self._run = self._run_of(layer)
        self.shapes = self._clusters_layer_of(layer)
        det = detections_from_layers(layer, self.shapes)
        if det.extra is not None:
            for c in det.extra.columns:
                det.calcifications[c] = det.extra[c].to_numpy()
        if not det.image_shape:
            det.image_shape = tuple(int(s) for s in np.max(layer.data, axis=0) + 1) if len(layer.data) else (1, 1)
        self._open_session(det, restore=previous is None, previous=previous)

    def _open_session(self, det, *, restore: bool, previous: pd.DataFrame | None = None) -> None:
        """Start reviewing ``det``: restore its autosave (``restore``), or carry
        the review ``previous`` of an earlier run over to it."""
        sidecar = self._sidecar_for(det)
        note = ""
        failed = None  # why the autosave file could not be used
        who = self.annotator.value
        try:
            if sidecar is not None and restore:
                session = ReviewSession.open_or_create(det, sidecar, annotator=who)
            elif previous is not None:
                session = ReviewSession.start_over(previous, det, sidecar, annotator=who)
            else:
                session = ReviewSession(det, sidecar=sidecar, annotator=who)
        except (NapariCalcError, OSError) as e:
            try:
                session = (ReviewSession.start_over(previous, det, annotator=who) if previous is not None
                           else ReviewSession(det, annotator=who))
            except NapariCalcError as bad:  # the layer itself cannot be reviewed: say why, on the layer
                name = getattr(self.layer, "name", "the layer")
                self.detach()
                self._report(NapariCalcError(f"cannot review '{name}': {bad.reason}"))
                return
            failed = str(e)
            sidecar = None
        carried = carried_over_text(session.carried_over)
        if carried:
            note += f" — {carried}"
            from napari.utils.notifications import show_info

            show_info(f"napari-calc: {carried}")
        if session.newer_file is not None:
            note += (f" — {os.path.basename(session.newer_file)} was saved after the autosave and differs "
                     "from it: its review is the one shown")
            from napari.utils.notifications import show_info

            show_info(f"napari-calc: {os.path.basename(session.newer_file)} is newer than its review autosave; "
                      f"the file's review is shown (the autosave is kept)")
        if session.backup is not None:
            note += f" (the previous review was kept as {session.backup.name})"
        self.session = session
        self._show_autosave(sidecar, restored=bool(session.history and restore), failed=failed, note=note)
        self._unsubscribe = session.subscribe(self._on_session_changed)
        self._pushed_clusters = self._clusters_in_layer(session)
        self._set_threshold_widget(session.threshold)
        self.current_id = None
        self.current_cluster = None
        self._nav_from = None
        self._connect_layer(self.layer)
        self._sync(full=True)
        if not _same(self.layer_combo.value, self.layer):
            self.layer_combo.value = self.layer

    def _show_autosave(self, sidecar, *, restored: bool = False, failed: str | None = None,
                       note: str = "") -> None:
        """Say in the panel where the review is saved (or why it is not)."""
        if failed is not None:  # not "this image has no file": it has, and its review stays there
            self.autosave_label.setText(f"⚠ Autosave off: could not use the autosave file ({failed}); "
                                        "edits here are not saved. Its review is kept as it was." + note)
            self.autosave_label.setStyleSheet("color: #ffb000;")
        elif sidecar is None:
            self.autosave_label.setText("⚠ Autosave off: this image has no file. Choose a project folder "
                                        "to keep the review." + note)
            self.autosave_label.setStyleSheet("color: #ffb000;")
        else:
            self.autosave_label.setText(("Restored review from " if restored else "Autosave: ")
                                        + os.fspath(sidecar) + note)
            self.autosave_label.setStyleSheet("")

    def detach(self) -> None:
        """Stop reviewing the current layer (its autosave file stays complete)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.session is not None:
            self.session.close()
        if self.layer is not None:
            self._disconnect_layer(self.layer)
            _UNDER_REVIEW.pop(_real(self.layer), None)
        self.session = None
        self.layer = None
        self.shapes = None
        self.current_id = None
        self.current_cluster = None
        self._nav_from = None
        self.calc_model.set_frame(pd.DataFrame({c: [] for c in CALC_TABLE_COLUMNS}))
        self.cluster_model.set_frame(pd.DataFrame({c: [] for c in CLUSTER_TABLE_COLUMNS}))
        self._update_buttons()

    def close_session(self) -> None:
        """Close the review (used when the viewer closes)."""
        self.detach()

    # ------------------------------------------------------------------ layer <-> session
    def _connect_layer(self, layer) -> None:
        layer.events.data.connect(self._on_layer_data)
        layer.events.features.connect(self._on_layer_features)
        layer.events.name.connect(self._on_layer_renamed)
        for keys, action, _ in SHORTCUTS:
            for k in keys:
                layer.bind_key(k, self._key_handler(action), overwrite=True)

    def _disconnect_layer(self, layer) -> None:
        for ev, cb in ((layer.events.data, self._on_layer_data),
                       (layer.events.features, self._on_layer_features),
                       (layer.events.name, self._on_layer_renamed)):
            try:
                ev.disconnect(cb)
            except (TypeError, ValueError, RuntimeError):
                pass
        for keys, _, _ in SHORTCUTS:
            for k in keys:
                try:
                    layer.bind_key(k, None)
                except Exception:  # pragma: no cover
                    pass
        if self.add_btn.native.isChecked():
            self.add_btn.native.setChecked(False)

    def _bind_viewer_keys(self) -> None:
        for keys, action, _ in SHORTCUTS:
            if action in ("next", "previous") and len(keys) > 1:
                keys = keys[:1]  # Space / Backspace keep their napari meaning off the layer
            for k in keys:
                self.viewer.bind_key(k, self._key_handler(action), overwrite=True)

    def _key_handler(self, action):
        def handler(_parent):
            if self.session is None:
                return
            try:
                self.do(action)
            except RuntimeError:  # the panel was closed (Qt objects deleted)
                self.session = None
        handler.__name__ = f"napari_calc_{action}"
        handler.__doc__ = f"napari-calc review: {action}"
        return handler

    def _sync(self, *, full: bool, op: str = "") -> None:
        """Push the session state into the layers and the tables (bulk)."""
        s, layer = self.session, self.layer
        if s is None or layer is None:
            return
        det = s.detections
        calcs = det.calcifications
        self._syncing = True
        try:
            with layer.events.data.blocker(), layer.events.features.blocker():
                data_changed = len(layer.data) != len(calcs)
                if not data_changed and (full or op in ("add", "delete", "move", "undo", "redo")):
                    # positions may differ (a restored review, an undone move): compare, vectorised
                    cols = ["slice", "row", "col"] if det.ndim == 3 else ["row", "col"]
                    data_changed = not np.array_equal(np.asarray(layer.data, float),
                                                      calcs[cols].to_numpy(float))
                update_points_layer(layer, calcs, det.spacing_mm, det.ndim, data_changed=data_changed,
                                    visible=s.visible_mask())
            if self.shapes is None:
                self.shapes = self._clusters_layer_of(layer)
            if self.shapes is not None and not self._same_clusters(det):
                update_shapes_layer(self.shapes, calcs, det.clusters, det.spacing_mm, det.ndim)
                self._pushed_clusters = (det.clusters.copy(), calcs["cluster_id"].to_numpy().copy())
        finally:
            self._syncing = False
        self.calc_model.set_frame(calcs, keep=s.visible_mask())
        self.cluster_model.set_frame(det.clusters)
        for table, model in ((self.calc_table, self.calc_model), (self.cluster_table, self.cluster_model)):
            sec, order = model.sort_section()
            hdr = table.horizontalHeader()
            if sec >= 0 and (hdr.sortIndicatorSection() != sec or hdr.sortIndicatorOrder() != order):
                hdr.blockSignals(True)
                hdr.setSortIndicator(sec, order)
                hdr.blockSignals(False)
        self._highlight_current(move_view=False)
        self._update_buttons()

    def _clusters_in_layer(self, session):
        """What the clusters layer shows now, if it is this detection's table."""
        shp = self.shapes
        if shp is None or self.layer is None:
            return None
        det = session.detections
        feats = clusters_of_features(shp.features)  # a stack's cluster: one outline per slice
        cols = [c for c in det.clusters.columns]
        if len(feats) != len(det.clusters) or not all(c in feats.columns for c in cols):
            return None
        lay_cid = self.layer.features["cluster_id"].to_numpy() if "cluster_id" in self.layer.features else None
        if lay_cid is None or len(lay_cid) != len(det.calcifications):
            return None
        return (feats[cols].reset_index(drop=True), np.asarray(lay_cid))

    def _same_clusters(self, det) -> bool:
        """True when the clusters layer already shows ``det``'s clusters."""
        prev = getattr(self, "_pushed_clusters", None)
        if prev is None:
            return False
        cl, cid = prev
        now = det.calcifications["cluster_id"].to_numpy()
        if len(cid) != len(now) or not np.array_equal(cid, now):
            return False
        try:
            return cl.shape == det.clusters.shape and bool((cl.to_numpy() == det.clusters.to_numpy()).all())
        except Exception:  # pragma: no cover - odd dtypes
            return False

    def _on_session_changed(self, op: str) -> None:
        self._sync(full=False, op=op)

    @staticmethod
    def _run_of(layer):
        return (layer.metadata.get("napari_calc") or {}).get("run")

    def _on_layer_features(self, event=None):
        """Features replaced by someone else: a new detection run on the
        same image updates the layer in place; start a new review then."""
        if self._syncing or self.layer is None:
            return
        QTimer.singleShot(0, self._check_new_run)

    def _check_new_run(self):
        layer = self.layer
        if layer is None or self._run_of(layer) == self._run:
            return
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        previous = self.session.detections.calcifications if self.session is not None else None
        if self.session is not None:
            self.session.close()
        self.session = None
        det = detections_from_layers(layer, self.shapes)
        self._run = self._run_of(layer)
        self._open_session(det, restore=False, previous=previous)

    def _on_layer_data(self, event) -> None:
        """Edits made with napari's own tools: add (click), delete, move."""
        if self._syncing or self.session is None or self.layer is None:
            return
        if self._run_of(self.layer) != self._run:
            return  # a new detection run is replacing the data
        action = str(getattr(event, "action", ""))
        idx = getattr(event, "data_indices", ())
        calcs = self.session.detections.calcifications
        n_session = len(calcs)
        ids = calcs["calc_id"].to_numpy()
        if action == "removing":
            self._removing_ids = [int(ids[i]) for i in idx if 0 <= i < n_session]
        elif action == "added":
            new = np.asarray(self.layer.data[n_session:], dtype=float)
            if len(new):
                QTimer.singleShot(0, lambda: self._add_points(new))
        elif action == "removed":
            gone, self._removing_ids = self._removing_ids, []
            if gone:
                QTimer.singleShot(0, lambda: self._delete_ids(gone))
        elif action == "changed" and len(self.layer.data) == n_session:
            # moved points: those whose position differs from the session's
            cols = ["slice", "row", "col"] if self.session.detections.ndim == 3 else ["row", "col"]
            old = calcs[cols].to_numpy(float)
            cur = np.asarray(self.layer.data, dtype=float)
            moved = np.flatnonzero(np.any(np.abs(np.round(cur) - old) > 0.5 - 1e-9, axis=1))
            moves = [(int(ids[i]), cur[i]) for i in moved]
            if moves:
                QTimer.singleShot(0, lambda: self._move_points(moves))

    def _report(self, exc: Exception) -> None:
        msg = str(exc)
        self.info.setText(f"⚠ {msg}")
        try:
            from napari.utils.notifications import show_warning

            show_warning(f"napari-calc: {msg}")
        except Exception:  # pragma: no cover
            pass

    def _add_points(self, coords: np.ndarray) -> None:
        if self.session is None:
            return
        last = None
        for p in coords:
            try:
                if self.session.detections.ndim == 3:
                    last = self.session.add(p[-2], p[-1], slice=p[0])
                else:
                    last = self.session.add(p[-2], p[-1])
            except NapariCalcError as e:
                self._report(e)
        if last is None:
            self._sync(full=True)
        else:
            self.current_id = last
            self._highlight_current(move_view=False)

    def _delete_ids(self, ids) -> None:
        if self.session is not None and ids:
            self.session.delete(ids)

    def _move_points(self, moves) -> None:
        if self.session is None:
            return
        for cid, p in moves:
            try:
                if self.session.detections.ndim == 3:
                    self.session.move(cid, p[-2], p[-1], slice=p[0])
                else:
                    self.session.move(cid, p[-2], p[-1])
            except NapariCalcError as e:
                self._report(e)
                self._sync(full=True)

    # ------------------------------------------------------------------ actions
    def do(self, action: str) -> None:
        """Perform a review action by name (what keys and buttons call).

        ``accept``, ``reject``, ``next``, ``previous``, ``next_cluster``,
        ``previous_cluster``, ``undo``, ``redo``, ``delete``.
        """
        s = self.session
        if s is None:
            return
        try:
            if action in ("accept", "reject", "delete"):
                if self.current_id is None:  # show the one it would act on first, and wait
                    self.current_id = s.next_id(None)
                    self._highlight_current(move_view=True)
                    return
                cid = self.current_id
                if cid is None:
                    return
                nxt = s.next_id(cid) if self.advance.value or action == "delete" else None
                getattr(s, action)([cid])
                if action == "delete" or (self.advance.value and nxt is not None):
                    self.go_to(nxt if nxt is not None else s.next_id(None))
            elif action in ("next", "previous"):
                start = self.current_id if self.current_id is not None else self._nav_from
                nid = s.next_id(start, direction=1 if action == "next" else -1)
                if nid is not None:
                    self.go_to(nid)
                else:  # say so, rather than nothing happening
                    self.viewer.status = (f"napari-calc: no {'next' if action == 'next' else 'previous'} "
                                          "calcification above the threshold")
            elif action in ("next_cluster", "previous_cluster"):
                cid = s.next_cluster(self.current_cluster, direction=1 if action == "next_cluster" else -1)
                if cid is not None:
                    self.go_to_cluster(cid)
                else:
                    self.viewer.status = (f"napari-calc: no {'next' if action == 'next_cluster' else 'previous'}"
                                          " cluster")
            elif action in ("undo", "redo"):
                # the candidate whose decision is undone (or redone) becomes
                # the current one, to see what changed back
                ids = s.undo_ids if action == "undo" else s.redo_ids
                if getattr(s, action)():
                    there = set(s.detections.calcifications["calc_id"].tolist())
                    back = next((i for i in ids if i in there), None)  # not an undone add
                    if back is not None:
                        self.go_to(back)
            else:
                raise ValueError(f"unknown review action {action!r}")
        except NapariCalcError as e:
            self._report(e)

    def go_to(self, calc_id) -> None:
        """Make ``calc_id`` current: select it, centre and zoom the view on it."""
        if calc_id is None or self.session is None:
            return
        self.current_id = int(calc_id)
        self._highlight_current(move_view=True)

    def go_to_cluster(self, cluster_id) -> None:
        """Centre and zoom the view on a cluster."""
        s = self.session
        if s is None:
            return
        cl = s.detections.clusters
        hit = cl[cl["cluster_id"] == int(cluster_id)]
        if hit.empty:
            return
        self.current_cluster = int(cluster_id)
        # no current candidate: the label boxes no longer edit the one left
        # behind (off screen), and start empty for "Apply labels to cluster"
        if self.current_id is not None:
            self._nav_from = self.current_id  # N / P go on from there
        self.current_id = None
        self._setting_labels = True
        try:
            self.morphology.value = self.distribution.value = self.suspicion.value = ""
        finally:
            self._setting_labels = False
        r = hit.iloc[0]
        pos = [float(r["row"]), float(r["col"])]
        if "slice" in r:
            pos = [float(r["slice"])] + pos
        extent = float(r.get("max_extent_mm", 10.0)) + CLUSTER_MARGIN_MM
        self._centre_on(np.asarray(pos), field_mm=max(extent, FOCUS_FIELD_MM / 2))
        members = s.cluster_members(int(cluster_id))
        if len(members):
            pos_in_df = np.flatnonzero(np.isin(s.detections.calcifications["calc_id"].to_numpy(), members))
            self.layer.selected_data = set(pos_in_df.tolist())
        row = self.cluster_model.row_of("cluster_id", int(cluster_id))
        if row is not None:
            self._select_table_row(self.cluster_table, row)
        self.current_label.setText(f"Cluster {cluster_id}: n={int(r['n_calcifications'])}, "
                                   f"{float(r['max_extent_mm']):.1f} mm")

    def _centre_on(self, pixel_pos: np.ndarray, field_mm: float = FOCUS_FIELD_MM) -> None:
        layer = self.layer
        world = np.asarray(layer.data_to_world(pixel_pos), dtype=float)
        if len(world) == 3 and self.viewer.dims.ndisplay == 2:
            self.viewer.dims.set_point(0, world[0])
        _camera(self.viewer).center = tuple(world[-2:])
        h, w = _canvas_size(self.viewer)
        target = max(min(h, w), 100) / field_mm / 1.0  # screen px per mm (world unit)
        unit = float(min(layer.scale[-2:]))  # world units are mm when the layer scale is mm
        if unit > 0 and _camera(self.viewer).zoom < target:
            _camera(self.viewer).zoom = target

    def _highlight_current(self, *, move_view: bool) -> None:
        s, layer = self.session, self.layer
        if s is None or layer is None:
            return
        calcs = s.detections.calcifications
        if self.current_id is None:
            self.current_label.setText(f"{len(calcs)} calcifications; press N to start.")
            return
        pos = np.flatnonzero(calcs["calc_id"].to_numpy() == self.current_id)
        if not len(pos):
            self.current_id = None
            return
        p = int(pos[0])
        self._syncing = True
        try:
            layer.selected_data = {p}
        finally:
            self._syncing = False
        if move_view:
            self._centre_on(np.asarray(layer.data[p], dtype=float))
        row = self.calc_model.row_of("calc_id", self.current_id)
        if row is not None:
            self._select_table_row(self.calc_table, row)
        r = calcs.iloc[p]
        self.current_label.setText(
            f"<b>#{int(r['calc_id'])}</b> {r['status']} — score {float(r['score']):.2f}, "
            f"{float(r['diameter_mm']):.2f} mm" + (f", cluster {int(r['cluster_id'])}"
                                                   if int(r["cluster_id"]) >= 0 else ""))
        self._setting_labels = True
        try:
            self.morphology.value = r.get("morphology", "") or ""
            self.distribution.value = r.get("distribution", "") or ""
            self.suspicion.value = r.get("suspicion", "") or ""
        finally:
            self._setting_labels = False

    def _select_table_row(self, table: QTableView, row: int) -> None:
        self._selecting_row = True
        try:
            table.selectRow(row)
            table.scrollTo(table.model().index(row, 0), QAbstractItemView.PositionAtCenter)
        finally:
            self._selecting_row = False

    def _on_calc_row(self, current, previous=None, force=False):
        if (self._selecting_row and not force) or self.session is None or not current.isValid():
            return
        cid = int(self.calc_model.value(current.row(), "calc_id"))
        if cid != self.current_id or force:
            self.go_to(cid)

    def _on_cluster_row(self, current, previous=None, force=False):
        if (self._selecting_row and not force) or self.session is None or not current.isValid():
            return
        self.go_to_cluster(int(self.cluster_model.value(current.row(), "cluster_id")))

    # ------------------------------------------------------------------ labels, threshold, ...
    def _on_label_changed(self, *_):
        if self._setting_labels or self.session is None or self.current_id is None:
            return
        try:
            self.session.set_labels([self.current_id], morphology=self.morphology.value,
                                    distribution=self.distribution.value, suspicion=self.suspicion.value)
        except NapariCalcError as e:
            self._report(e)

    def _label_cluster(self, *_):
        s = self.session
        if s is None:
            return
        cid = self.current_cluster
        if self.current_id is not None:  # a candidate is current: its cluster
            c = int(s.row(self.current_id)["cluster_id"])
            cid = c if c >= 0 else None
        if cid is None:
            self.info.setText("No current cluster: press C to go to one.")
            return
        members = s.cluster_members(cid)
        # the labels that are set; an empty choice leaves each member's own label
        # (it cleared them: "" means "clear" to set_labels)
        set_ = {k: (w.value or None) for k, w in (("morphology", self.morphology),
                                                  ("distribution", self.distribution),
                                                  ("suspicion", self.suspicion))}
        s.set_labels(members.tolist(), **set_)

    def _set_threshold_widget(self, value: float) -> None:
        self._threshold_timer.stop()
        with self.threshold.changed.blocked():
            self.threshold.value = float(np.clip(value, 0.0, 1.0))

    def _on_threshold(self, value):
        """Live: hide candidates below the threshold now; journal it shortly after."""
        s, layer = self.session, self.layer
        if s is None or layer is None:
            return
        calcs = s.detections.calcifications
        vis = (calcs["score"].to_numpy() >= float(value)) | calcs["status"].isin(("accepted", "added")).to_numpy()
        if len(calcs):  # napari warns on an empty colour array
            layer.border_color = point_colors(calcs, "status", vis)
        layer.shown = vis
        self._threshold_timer.start()

    def _commit_threshold(self):
        if self.session is not None:
            self.session.set_threshold(float(self.threshold.value))

    def _on_annotator(self, value):
        if self.session is not None:
            self.session.annotator = str(value)

    def _on_project_dir(self, *_):
        proj = str(self.project_dir.value or "").strip()
        if proj == getattr(self, "_project_in_use", None):
            return
        self._project_in_use = proj
        if self.layer is not None:
            s = self.session
            df = s.detections.calcifications if s is not None else None
            if df is not None and (s.history or (df["status"] != "candidate").any()):
                # a review under way moves to the new place, undo history and
                # all (a file there is kept as .bak); it was replaced on
                # screen by an older one saved there
                target = self._sidecar_for(s.detections)
                try:
                    s.move_to(target)
                except (NapariCalcError, OSError) as e:
                    self._report(NapariCalcError(f"the review stays where it was saved: "
                                                 f"{getattr(e, 'reason', None) or e}"))
                    return
                note = " — the review under way moved here, its undo history with it"
                if s.backup is not None:
                    note += f" (the review saved here before was kept as {s.backup.name})"
                self._show_autosave(target, note=note if target is not None else "")
                self._update_buttons()
            else:
                self.attach(self.layer)

    def _on_add_toggled(self, on: bool):
        if self.layer is None:
            self.add_btn.native.setChecked(False)
            return
        self.layer.mode = "add" if on else "pan_zoom"
        if on:
            self.viewer.layers.selection.active = self.layer

    def _update_buttons(self) -> None:
        s = self.session
        on = s is not None
        for name, b in self.btns.items():
            b.enabled = on
        if not on:  # the counts of a review that is gone would mislead
            self.info.setText(NO_REVIEW_TEXT)
        elif s.compact_error and "⚠ Autosave" not in self.autosave_label.text():
            self.autosave_label.setText(f"⚠ Autosave: every action is saved, but the file could not be "
                                        f"rewritten ({s.compact_error}); retrying later. "
                                        + self.autosave_label.text())
            self.autosave_label.setStyleSheet("color: #ffb000;")
        if on:
            self.btns["undo"].enabled = s.can_undo
            self.btns["redo"].enabled = s.can_redo
            st = s.detections.calcifications["status"].value_counts()
            self.info.setText(
                f"{len(s.detections.calcifications)} calcifications: "
                f"{int(st.get('accepted', 0))} accepted, {int(st.get('rejected', 0))} rejected, "
                f"{int(st.get('added', 0))} added, {int(st.get('candidate', 0))} to review; "
                f"{len(s.detections.clusters)} clusters.")
