"""The "Review worklist" dock widget: go through a batch's images one by one.

A thin Qt view on :class:`napari_calc.core.worklist.Worklist`. Opening an
image of the list replaces the previous one in the viewer (its image layer
and its result layers), opens the image and its detections with this
plugin's readers, and lets the "Review calcifications" panel review them,
with the autosave in the batch folder. The reviewed tables are written back
over the image's outputs two seconds after each change and when you move
on, so the batch folder is the labelled dataset at every moment.

Keyboard: Shift-N opens the next image still to review, Shift-P the
previous image (bound on the viewer, so they work with the focus on the
canvas; this panel's table and the Review panel's tables pass them on too,
so they work after a click on a row).
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import NapariCalcError, printable
from ..core.review import ReviewSession
from ..core.worklist import Progress, Worklist, holds_review, read_worklist
from ._keys import pass_keys_on
from ._scroll import PanelScroll
from .layers import find_result_layers

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["WorklistWidget", "SAVE_DELAY_MS"]

#: The reviewed tables are written this long after the last change.
SAVE_DELAY_MS = 2000
_COLUMNS = ["#", "image", "likely / all", "review"]
_STATE_COLOURS = {"reviewed": "#3cb44b", "in progress": "#ffb000", "cannot open": "#e6194b"}
_NO_LIST = "No worklist: choose the --out folder of a napari-calc detect run."
#: Keyboard shortcuts: key -> direction of :meth:`WorklistWidget.go`.
_NAV_KEYS = {"Shift-N": +1, "Shift-P": -1}


def _reason(exc: BaseException) -> str:
    """One line for a failed open: our own error's reason when napari
    wrapped one, else the first line of the message."""
    seen = exc
    while seen is not None:
        if isinstance(seen, NapariCalcError):
            return printable(seen.reason)
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip()
    return printable(text.splitlines()[0] if text else type(exc).__name__)


def _review_widget(viewer):
    """The "Review calcifications" panel (docked when it is not)."""
    from .viewer import PLUGIN_NAME, REVIEW_WIDGET

    _, w = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, REVIEW_WIDGET, tabify=False)
    return w


class WorklistWidget(QWidget):
    """Dock widget: the images of a batch output folder and their reviews."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worklist: Worklist | None = None
        self.current: int | None = None
        self.progress: dict[int, Progress] = {}
        self._layers: list = []  # the layers opened for the current image
        self._notes: list[str] = []  # what loading the list had to say (stays shown)
        self._notes_warn = False
        self._progress_worker = None
        self._last_text = ""
        self._review = None
        self._saved_state = None  # (session id, journal length) last written
        self._shown_state = None  # ... and last shown in the progress column
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self.save_current)
        self._poll = QTimer(self)
        self._poll.setInterval(500)
        self._poll.timeout.connect(self._check_changes)

        self.folder = QLineEdit()
        self.folder.setPlaceholderText("batch folder (napari-calc detect --out)")
        self.folder.editingFinished.connect(lambda: self.load(self.folder.text()) if self.folder.text().strip()
                                            and self.folder.text() != self._loaded_text() else None)
        self.browse = QPushButton("Open…")
        self.browse.setToolTip("Choose the --out folder of a napari-calc detect run.")
        self.browse.clicked.connect(self._choose_folder)
        self.summary = QLabel(_NO_LIST)
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        # a long image name on one line, shortened in the middle (it wrapped
        # into a cell one line high, cut off at both ends); in full: its tooltip
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.cellDoubleClicked.connect(lambda row, _col: self.open_index(row))
        self.prev_btn = QPushButton("◀ Previous image (Shift-P)")
        self.next_btn = QPushButton("Next to review (Shift-N) ▶")
        self.prev_btn.clicked.connect(lambda: self.go(-1))
        self.next_btn.clicked.connect(lambda: self.go(+1))
        self.status = QLabel("")
        self.status.setWordWrap(True)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        body = QWidget()
        outer.addWidget(PanelScroll(body))  # fits a short screen: scrolls there
        lay = QVBoxLayout(body)
        lay.setContentsMargins(4, 4, 4, 4)
        row = QHBoxLayout()
        row.addWidget(self.folder, stretch=1)
        row.addWidget(self.browse)
        lay.addLayout(row)
        lay.addWidget(self.summary)
        btns = QHBoxLayout()
        btns.addWidget(self.prev_btn)
        btns.addWidget(self.next_btn)
        lay.addLayout(btns)
        lay.addWidget(self.table, stretch=1)
        hint = QLabel("Double-click an image to open it. Reviews are autosaved in the batch folder; "
                      "each reviewed image's tables (and detections JSON) are written back over its "
                      "outputs as you go.")
        hint.setWordWrap(True)
        lay.addWidget(hint)
        lay.addWidget(self.status)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        for key, direction in _NAV_KEYS.items():
            self.viewer.bind_key(key, self._key_handler(direction), overwrite=True)
        # napari hands the keys a panel's widgets leave (a button's) to the
        # viewer's keymap, but the table takes Shift-N and Shift-P for its
        # keyboard search: after a click on the list they did nothing. The
        # table passes them on (its arrow keys and search stay).
        self._pass_nav_keys_on((self.table,))
        self._update_buttons()

    # ------------------------------------------------------------------ helpers
    def _loaded_text(self) -> str:
        return os.fspath(self.worklist.out_dir) if self.worklist is not None else ""

    def _pass_nav_keys_on(self, widgets) -> None:
        """Make ``widgets`` run Shift-N and Shift-P rather than take them."""
        pass_keys_on(widgets, {k: (lambda d=d: self.go(d)) for k, d in _NAV_KEYS.items()}, self)

    def _key_handler(self, direction):
        def handler(_viewer):
            try:
                self.go(direction)
            except RuntimeError:  # the panel was closed (Qt objects deleted)
                pass
        handler.__name__ = "napari_calc_next_image" if direction > 0 else "napari_calc_previous_image"
        handler.__doc__ = "napari-calc worklist: " + ("next image to review" if direction > 0 else "previous image")
        return handler

    def _say(self, text: str, warn: bool = False) -> None:
        """Show ``text`` below what loading the list had to say."""
        self._last_text = text
        lines = self._notes + ([text] if text else [])
        rv = self._review
        if self.worklist is not None and rv is not None and not str(rv.annotator.value or "").strip():
            lines.append("Your name is not set: type it in the Review panel's Annotator field (or start "
                         "with --annotator NAME), so that the tables record who decided.")
        self.status.setText("\n".join(lines))
        self.status.setStyleSheet("color: #ffb000;" if warn or self._notes_warn else "")

    def _choose_folder(self, *_):
        d = QFileDialog.getExistingDirectory(self, "Batch folder (napari-calc detect --out)",
                                             self.folder.text() or os.getcwd())
        if d:
            self.load(d)

    @property
    def review(self):
        if self._review is None:
            self._review = _review_widget(self.viewer)
        return self._review

    # ------------------------------------------------------------------ the list
    def load(self, out_dir, *, open_first: bool = True) -> Worklist | None:
        """Show the worklist of the batch folder ``out_dir`` and open its
        first image still to review (``open_first``). A folder that is not
        a batch's gives one line in the panel and returns None."""
        try:
            wl = read_worklist(out_dir)
        except NapariCalcError as e:
            self._notes, self._notes_warn = [], False
            self._say(str(e), warn=True)
            return None
        self.set_worklist(wl, open_first=open_first)
        return wl

    def set_worklist(self, wl: Worklist, *, open_first: bool = True) -> None:
        """Use ``wl`` (see :meth:`load`)."""
        self._leave_current()
        self.worklist = wl
        self.current = None
        self.folder.setText(os.fspath(wl.out_dir))
        rv = self.review
        if not getattr(rv, "_worklist_hooked", False):
            rv.annotator.changed.connect(lambda *_: self._say(self._last_text))
            # a candidate's row clicked last: Shift-N still goes to the next image
            self._pass_nav_keys_on((rv.calc_table, rv.cluster_table))
            rv._worklist_hooked = True
        rv.sidecar_resolver = self._sidecar_for_layer
        rv.project_dir.value = os.fspath(wl.out_dir)
        rv._project_in_use = os.fspath(wl.out_dir)  # the worklist's folder from the start: nothing to move
        for w in (rv.project_dir, rv.project_btn):
            w.enabled = False
            w.tooltip = "The worklist keeps the reviews in its batch folder."
        self._notes, self._notes_warn = list(wl.problems), bool(wl.problems)
        self._write_stale_tables()
        # without an autosave, "to review" at once; the others are read in a
        # worker thread, so that a long batch does not hold the window
        self.progress = {}
        reviewed = []
        for i, it in enumerate(wl.items):
            if wl.sidecar(it).is_file():
                reviewed.append(i)
            else:
                self.progress[i] = wl.progress(it)
        self.table.setRowCount(len(wl.items))
        for i, it in enumerate(wl.items):
            self.table.setItem(i, 0, QTableWidgetItem(str(i + 1)))
            name = QTableWidgetItem(it.stem)
            name.setToolTip(it.image)
            self.table.setItem(i, 1, name)
            self.table.setItem(i, 2, QTableWidgetItem(f"{it.n_likely} / {it.n_candidates}"))
            self._show_progress(i)
        self.table.resizeColumnToContents(0)
        self.table.resizeColumnToContents(2)
        self._say("")
        self._update_summary()
        self._poll.start()
        if open_first and wl.items:
            first = wl.next_index(None, to_review_only=True, progress=self.progress)
            self.open_index(0 if first is None else first)
        self._read_progress(wl, [i for i in reviewed if i not in self.progress])

    def _read_progress(self, wl: Worklist, indices: list[int]) -> None:
        """Read the progress of items ``indices`` from their autosaves in a
        worker thread; the table fills in as they come."""
        if self._progress_worker is not None:
            self._progress_worker.quit()
            self._progress_worker = None
        if not indices:
            return
        from napari.qt.threading import create_worker

        def job():
            for i in indices:
                yield wl, i, wl.progress(wl.items[i])

        worker = create_worker(job, _start_thread=False)
        worker.yielded.connect(self._on_progress)
        worker.finished.connect(lambda: setattr(self, "_progress_worker", None)
                                if self._progress_worker is worker else None)
        self._progress_worker = worker
        worker.start()

    def _on_progress(self, result) -> None:
        wl, i, p = result
        if wl is not self.worklist or i in self.progress:
            return  # another list by now, or known already (the current image: from its session)
        self.progress[i] = p
        self._show_progress(i)
        self._update_summary()

    def _write_stale_tables(self) -> None:
        """Write the tables of reviews saved after them (napari closed before
        the tables were written); what happened goes to the notes."""
        wl, done = self.worklist, 0
        for it in wl.stale_tables():
            try:
                s = ReviewSession.restore(wl.sidecar(it), read_only=True)
                if not holds_review(s):  # opened, nothing decided: the table is as it was
                    continue
                wl.save_reviewed(it, s.detections)
                done += 1
            except (NapariCalcError, OSError) as e:
                self._notes.append(f"{printable(it.stem)}: its reviewed tables could not be written "
                                   f"({printable(getattr(e, 'reason', e))}); the review is kept in its "
                                   "autosave")
                self._notes_warn = True
        if done:
            self._notes.append(f"wrote the tables of {done} review(s) made after their tables were last "
                               "written")

    def _show_progress(self, i: int) -> None:
        p = self.progress.get(i)
        if p is None:
            self.table.setItem(i, 3, QTableWidgetItem("…"))  # being read
            return
        if p.state == "in progress":
            short = f"in progress ({p.to_review} left)"
        elif p.state == "reviewed":
            short = f"reviewed ({p.accepted + p.added} MC)"
        else:
            short = p.state
        item = QTableWidgetItem(short)
        item.setToolTip(p.state + (f": {p.text}" if p.text else ""))
        colour = _STATE_COLOURS.get(p.state)
        if colour:
            item.setForeground(QBrush(QColor(colour)))
        self.table.setItem(i, 3, item)
        bold = i == self.current
        for c in range(len(_COLUMNS)):
            cell = self.table.item(i, c)
            if cell is not None:
                f = cell.font()
                f.setBold(bold)
                cell.setFont(f)

    def _update_summary(self) -> None:
        wl = self.worklist
        if wl is None:
            self.summary.setText(_NO_LIST)
            return
        states = [p.state for p in self.progress.values()]
        n = len(wl.items)
        head = f"image {self.current + 1} of {n}" if self.current is not None else f"{n} images"
        reading = n - len(states)
        self.summary.setText(f"{head} · {states.count('reviewed')} reviewed, "
                             f"{states.count('in progress')} in progress, {states.count('to review')} "
                             f"to review" + (f", {states.count('cannot open')} cannot be opened"
                                             if states.count("cannot open") else "")
                             + (f" ({reading} being read)" if reading else ""))

    def _update_buttons(self) -> None:
        on = self.worklist is not None and len(self.worklist.items) > 0
        self.prev_btn.setEnabled(on and self.current not in (None, 0))
        self.next_btn.setEnabled(on)

    # ------------------------------------------------------------------ navigation
    def go(self, direction: int) -> int | None:
        """Open the next image still to review (``direction`` +1; after the
        last, the first one left from the start) or the previous image (-1).
        Returns the index opened, or None."""
        wl = self.worklist
        if wl is None:
            return None
        self._refresh_current()
        if direction > 0:
            nxt = wl.next_index(self.current, to_review_only=True, progress=self.progress)
            if nxt is None:
                nxt = wl.next_index(None, to_review_only=True, progress=self.progress)
                if nxt is None or nxt == self.current:
                    self.save_current()
                    if nxt is None:
                        self._say(f"every image of the list is reviewed; the tables are in "
                                  f"{printable(wl.out_dir)}")
                    else:
                        self._say("no other image is left to review: only this one")
                    return None
        else:
            nxt = wl.next_index(self.current, direction=-1)
            if nxt is None:
                return None
        return self.open_index(nxt)

    def open_index(self, i: int) -> int | None:
        """Open item ``i``: its image and detections replace the current
        ones. Returns ``i``, or None when it cannot be opened (one line in
        the panel; the current image stays)."""
        wl = self.worklist
        if wl is None or not 0 <= i < len(wl.items):
            return None
        it = wl.items[i]
        image = wl.image_path(it)
        if image is None:
            self.progress[i] = Progress("cannot open", text="image not found")
            self._show_progress(i)
            self._update_summary()
            where = (f"nor under {printable(wl.images_dir)}" if wl.images_dir is not None else
                     "moved or not mounted here? start with --images DIR, the folder it is in now")
            self._say(f"{printable(it.image)}: image not found ({where}); its detections stay in the "
                      "batch folder", warn=True)
            return None
        self._leave_current()
        previous, self.current = self.current, i
        before = set(map(id, self.viewer.layers))
        try:
            from .viewer import PLUGIN_NAME

            self.viewer.open(image, plugin=PLUGIN_NAME)
            self.viewer.open(os.fspath(it.detections), plugin=PLUGIN_NAME)
        except Exception as e:  # a reader error is a bad input: one line, never a traceback
            msg = _reason(e)
            self._say(f"{printable(it.stem)}: cannot be opened ({msg})", warn=True)
            self.progress[i] = Progress("cannot open", text=msg)
            ok = False
        else:
            ok = True
        opened = [lay for lay in self.viewer.layers if id(lay) not in before]
        self._layers = opened
        if ok:
            pts, _ = find_result_layers(self.viewer, self._image_name(it))
            if pts is not None:
                self.viewer.layers.selection.active = pts
                if self.review.layer is not pts:
                    self.review.attach(pts)
            # written once more when it holds a review: one carried over from an
            # earlier run's is not in this run's tables yet
            self._saved_state = None
            self._say(printable(image))
            self._refresh_current()
        self._show_progress(i)
        if previous is not None and previous != i:
            self._show_progress(previous)  # no longer bold
        self.table.selectRow(i)
        self._update_summary()
        self._update_buttons()
        return i if ok else None

    @staticmethod
    def _image_name(it) -> str:
        return os.path.basename(it.stem)

    def _sidecar_for_layer(self, layer, det):
        """The review panel's autosave path for the current item's layer."""
        wl, i = self.worklist, self.current
        if wl is None or i is None or layer is None:
            return None
        src = ((getattr(layer, "metadata", None) or {}).get("napari_calc") or {}).get("source_layer")
        if src != self._image_name(wl.items[i]):
            return None
        return wl.sidecar(wl.items[i])

    # ------------------------------------------------------------------ saving
    def _session(self):
        """The review panel's session when it is the current item's."""
        rv = self._review
        if rv is None or self.current is None or self.worklist is None:
            return None
        s = rv.session
        if s is None or s.sidecar is None:
            return None
        if os.path.abspath(s.sidecar) != os.path.abspath(self.worklist.sidecar(self.worklist.items[self.current])):
            return None
        return s

    def _state(self):
        s = self._session()
        return None if s is None else (id(s), len(s.history))

    def _check_changes(self) -> None:
        try:
            st = self._state()
        except RuntimeError:  # pragma: no cover - closing
            return
        if st is None:
            return
        if st != self._shown_state:  # every change shows at once; the save waits for a quiet spell
            self._refresh_current()
        if st != self._saved_state and not self._save_timer.isActive():
            self._save_timer.start()

    def _refresh_current(self) -> None:
        s = self._session()
        if s is None:
            return
        self._shown_state = self._state()
        self.progress[self.current] = self.worklist.progress(self.worklist.items[self.current], s)
        self._show_progress(self.current)
        self._update_summary()

    def save_current(self) -> list:
        """Write the current image's reviewed tables now (when its review
        changed since they were written). Returns the files written."""
        s = self._session()
        st = self._state()
        if s is None or st == self._saved_state or not holds_review(s):
            return []
        it = self.worklist.items[self.current]
        try:
            written = self.worklist.save_reviewed(it, s.detections)
        except (NapariCalcError, OSError) as e:
            self._say(f"{printable(it.stem)}: the reviewed tables could not be written "
                      f"({printable(getattr(e, 'reason', e))}); the review is kept in its autosave and "
                      "they are written when you reopen the worklist", warn=True)
            return []
        self._saved_state = st
        return written

    def _leave_current(self) -> None:
        """Write the current image's tables and close its layers."""
        self._save_timer.stop()
        if self.current is None:
            return
        self._refresh_current()
        self.save_current()
        layers, self._layers = self._layers, []
        # one batch: napari (0.9.2) cleans up its scene graph after each
        # removal with a full garbage collection, whose cost grows with the
        # heap (0.24 s each in a test process, 2026-12-08); batched, it
        # runs once for the image's three layers
        batch = getattr(self.viewer.layers, "batched_update", contextlib.nullcontext)
        with batch():
            for lay in layers:
                if lay in self.viewer.layers:
                    self.viewer.layers.remove(lay)
        self._saved_state = None

    def _on_layer_removed(self, event=None) -> None:
        lay = getattr(event, "value", None)
        if lay is not None and any(lay is x for x in self._layers):
            self._layers = [x for x in self._layers if x is not lay]

    def closeEvent(self, event):  # pragma: no cover - exercised through napari's window
        try:
            self.save_current()
        finally:
            super().closeEvent(event)
