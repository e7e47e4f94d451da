"""napari_calc.core and the CLI import and run with Qt and napari blocked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCKED = ["qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy", "superqt",
           "app_model", "npe2"]

SCRIPT = textwrap.dedent(r"""
    import importlib, importlib.abc, pkgutil, sys
    BLOCKED = set({blocked!r})

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {{name}} (Qt/napari must not be needed)")
            return None

    sys.meta_path.insert(0, Blocker())
    sys.path.insert(0, {root!r})
    import numpy as np, tifffile
    import napari_calc, napari_calc.core, napari_calc.cli
    # every core module
    names = []
    for m in pkgutil.walk_packages(napari_calc.core.__path__, "napari_calc.core."):
        importlib.import_module(m.name)
        names.append(m.name)
    for m in pkgutil.iter_modules(napari_calc.cli.__path__, "napari_calc.cli."):
        importlib.import_module(m.name)
    out = sys.argv[1]
    rc = napari_calc.cli.main(["demo", "--out", out + "/demo"])
    assert rc == 0, rc
    from napari_calc.core.phantom import make_phantom
    img = make_phantom(seed=5, size_mm=(40, 30)).image.pixels
    tifffile.imwrite(out + "/small.tif", img, resolution=(100.0, 100.0), resolutionunit="CENTIMETER")
    rc = napari_calc.cli.main(["detect", out + "/small.tif", "--out", out + "/det"])
    assert rc == 0, rc
    leaked = sorted(k for k in sys.modules if k.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("OK", len(names))
""")


def test_core_and_cli_work_without_qt_or_napari(tmp_path):
    script = SCRIPT.format(blocked=BLOCKED, root=str(ROOT))
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "OK" in r.stdout
    assert (tmp_path / "demo" / "sample-mammogram.calcifications.csv").exists()
    assert (tmp_path / "det" / "small.calcifications.csv").exists()
    assert (tmp_path / "det" / "small.clusters.csv").exists()


def test_blocker_really_blocks(tmp_path):
    """The guard itself works: importing the plugin package needs Qt."""
    script = SCRIPT.split("import numpy as np")[0] + "import napari_calc.plugin.detect_widget\n"
    script = script.format(blocked=BLOCKED, root=str(ROOT))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "blocked import" in r.stderr
