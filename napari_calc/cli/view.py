"""``napari-calc view [INPUT...]``: napari with the plugin docked."""

from __future__ import annotations

from ..core.errors import NapariCalcError


def register(sub) -> None:
    p = sub.add_parser("view", help="open napari with the napari-calc panels docked",
                       description="Open napari with the 'Detect calcifications' and 'Review "
                                   "calcifications' panels docked; INPUTs (images or our "
                                   "exports) are opened with the plugin's reader. Without "
                                   "INPUT, the sample mammogram is opened.")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="images or napari-calc exports to open")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        import napari
    except ImportError:
        raise NapariCalcError("napari is not installed; run: pip install 'napari-calc[napari]'")
    from ..plugin.viewer import open_viewer

    viewer = open_viewer(args.inputs)
    napari.run()
    del viewer
    return 0
