"""``napari-calc view [INPUT...]``: napari with the plugin docked."""

from __future__ import annotations

import importlib.util
import os
import sys

from ..core.errors import NapariCalcError

#: What to install for the viewer (napari, and the Qt binding napari recommends).
VIEWER_INSTALL = "pip install 'napari-calc[viewer]'"


def register(sub) -> None:
    p = sub.add_parser("view", help="open napari with the napari-calc panels docked",
                       description="Open napari with the 'Detect calcifications' and 'Review "
                                   "calcifications' panels docked; INPUTs (images or our "
                                   "exports) are opened with the plugin's reader. Without "
                                   "INPUT, the sample mammogram is opened.")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="images or napari-calc exports to open")
    p.set_defaults(func=run)


def check_viewer_can_start(environ=None, platform: str | None = None) -> None:
    """Raise :class:`NapariCalcError` (one line, with the fix) when napari
    cannot open its window here: napari missing, no Qt binding (napari
    itself does not install one), or, on Linux, no display to draw on (Qt
    would abort the process)."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    try:
        found = importlib.util.find_spec("napari") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise NapariCalcError(f"napari is not installed; run: {VIEWER_INSTALL}")
    try:
        import qtpy  # noqa: F401  (raises when no binding is installed)
    except ImportError:
        raise NapariCalcError("napari has no Qt binding to open its window with; run: "
                              f"{VIEWER_INSTALL} (PyQt6), or install PyQt5 or PySide6") from None
    try:
        import napari  # noqa: F401
    except ImportError as exc:  # installed but broken (e.g. a missing dependency)
        raise NapariCalcError(f"napari cannot be imported ({exc}); run: {VIEWER_INSTALL}") from None
    if platform.startswith("linux") and not any(
            environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        raise NapariCalcError("no display to open the napari window on (DISPLAY is not set): run it "
                              "in a desktop session or under xvfb-run, or use 'napari-calc detect' "
                              "for headless work")


def run(args) -> int:
    check_viewer_can_start()
    import napari

    from ..plugin.viewer import open_viewer

    viewer = open_viewer(args.inputs)
    napari.run()
    del viewer
    return 0
