"""``napari-calc view``: a napari viewer with both napari-calc panels docked."""

from __future__ import annotations

import os

__all__ = ["open_viewer", "open_worklist", "dock_panels", "PLUGIN_NAME", "DETECT_WIDGET", "REVIEW_WIDGET",
           "WORKLIST_WIDGET"]

PLUGIN_NAME = "napari-calc"
DETECT_WIDGET = "Detect calcifications"
REVIEW_WIDGET = "Review calcifications"
WORKLIST_WIDGET = "Review worklist"


def dock_panels(viewer, *, detect_left: bool = True):
    """Dock "Detect calcifications" and "Review calcifications" (once).

    Parameters
    ----------
    viewer : napari.Viewer
    detect_left : bool
        Move the detect panel to the left dock area (below the layer list)
        so the review panel gets the whole right-hand side.

    Returns
    -------
    (DetectWidget, ReviewWidget)
    """
    detect_dock, detect_w = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, DETECT_WIDGET)
    _, review_w = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, REVIEW_WIDGET, tabify=False)
    if detect_left:
        from qtpy.QtCore import Qt

        viewer.window._qt_window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, detect_dock)
    return detect_w, review_w


def open_viewer(inputs=(), *, viewer=None, show: bool = True):
    """Create (or reuse) a napari viewer, dock both panels and open inputs.

    Parameters
    ----------
    inputs : sequence of path-like
        Images (DICOM, TIFF) or napari-calc exports, opened with this
        plugin's readers. Empty: the synthetic sample mammogram is opened.
    viewer : napari.Viewer, optional
        Use this viewer instead of creating one.
    show : bool
        Show the window (False for tests / scripts).

    Returns
    -------
    napari.Viewer

    Raises
    ------
    NapariCalcError
        An input that is missing or cannot be read (one line naming it).
    """
    import napari

    from ..core.errors import UnreadableImageError
    from ..core.read import check_input

    from .export_reader import get_detections_reader
    from .reader import get_reader

    for p in inputs:
        p = os.fspath(p)
        check_input(p)  # missing ("scans/": folder not found), unreadable, empty
        if get_reader(p) is None and get_detections_reader(p) is None:
            # napari said only that the reader "refused the file", in a traceback
            raise UnreadableImageError(
                "no DICOM or TIFF images in this folder" if os.path.isdir(p) else
                "not an image napari-calc reads (DICOM, TIFF) nor one of its exports "
                "(.calcifications.csv, .clusters.csv, .detections.json, .sr.dcm, .cad-sr.dcm)", p)
    if viewer is None:
        viewer = napari.Viewer(title="napari-calc", show=show)
    dock_panels(viewer)
    if inputs:
        for p in inputs:
            viewer.open(os.fspath(p), plugin=PLUGIN_NAME)
    else:
        viewer.open_sample(PLUGIN_NAME, "sample-mammogram")
    return viewer


def open_worklist(worklist, *, start: int | None = None, annotator: str | None = None, viewer=None,
                  show: bool = True):
    """A napari viewer on a batch's worklist: both panels and the "Review
    worklist" panel docked, with ``worklist``'s image ``start`` open (None:
    the first one still to review, else the first).

    Parameters
    ----------
    worklist : napari_calc.core.worklist.Worklist
    start : int, optional
    annotator : str, optional
        The reviewer's name, recorded with every decision (default: the
        Review panel's, from ``$NAPARI_CALC_ANNOTATOR``).
    viewer : napari.Viewer, optional
        Use this viewer instead of creating one.
    show : bool
        Show the window (False for tests / scripts).

    Returns
    -------
    (napari.Viewer, WorklistWidget)
    """
    import napari

    if viewer is None:
        viewer = napari.Viewer(title=f"napari-calc review: {worklist.out_dir}", show=show)
    _, review = dock_panels(viewer)
    if annotator:
        review.annotator.value = annotator
    dock, w = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WORKLIST_WIDGET)
    # on the left, over the detect panel (a tab away): the review panel keeps
    # the whole right-hand side
    from qtpy.QtCore import Qt

    qt = viewer.window._qt_window
    qt.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
    detect, _ = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, DETECT_WIDGET)  # the docked one
    qt.tabifyDockWidget(detect, dock)
    dock.raise_()
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, dock.raise_)  # once the tabs exist
    w.set_worklist(worklist, open_first=start is None)
    if start is not None:
        w.open_index(start)
    return viewer, w
