"""``napari-calc view`` says in one line why napari cannot open, instead of a
traceback or a Qt abort: napari missing, no Qt binding, no display."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from napari_calc.cli.view import VIEWER_INSTALL, check_viewer_can_start
from napari_calc.core.errors import NapariCalcError

ROOT = Path(__file__).resolve().parents[1]

# napari_calc.cli.main(["view"]) with some top-level modules unimportable
SCRIPT = textwrap.dedent(r"""
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, Blocker())
    sys.path.insert(0, sys.argv[2])
    import napari_calc.cli
    sys.exit(napari_calc.cli.main(["view"]))
""")


def _view_with_blocked(modules, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DISPLAY": ":12345"}
    return subprocess.run([sys.executable, "-c", SCRIPT, ",".join(modules), str(ROOT)], env=env,
                          capture_output=True, text=True, timeout=120)


def _one_error_line(proc):
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("napari-calc: ")
    return lines[0]


def test_view_without_napari_names_the_install(tmp_path):
    line = _one_error_line(_view_with_blocked(["napari"], tmp_path))
    assert "napari is not installed" in line and VIEWER_INSTALL in line


def test_view_without_a_qt_binding_names_the_install(tmp_path):
    pytest.importorskip("napari")
    line = _one_error_line(_view_with_blocked(["PyQt5", "PyQt6", "PySide2", "PySide6"], tmp_path))
    assert "no Qt binding" in line and VIEWER_INSTALL in line


def test_view_without_a_display_on_linux():
    pytest.importorskip("napari")
    pytest.importorskip("qtpy")
    with pytest.raises(NapariCalcError, match=r"no display .*xvfb-run.*napari-calc detect"):
        check_viewer_can_start(environ={}, platform="linux")
    for env in ({"DISPLAY": ":0"}, {"WAYLAND_DISPLAY": "wayland-0"}, {"QT_QPA_PLATFORM": "vnc"}):
        check_viewer_can_start(environ=env, platform="linux")  # no error
    check_viewer_can_start(environ={}, platform="darwin")  # no X display needed there


def test_view_with_a_broken_napari_says_so(tmp_path):
    pytest.importorskip("qtpy")
    fake = tmp_path / "fake"
    (fake / "napari").mkdir(parents=True)
    (fake / "napari" / "__init__.py").write_text("raise ImportError(\"No module named 'somedep'\")\n")
    script = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import napari_calc.cli; "
              "sys.exit(napari_calc.cli.main(['view']))")
    proc = subprocess.run([sys.executable, "-c", script, str(fake), str(ROOT)], capture_output=True,
                          text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DISPLAY": ":12345"})
    line = _one_error_line(proc)
    assert "napari cannot be imported (No module named 'somedep')" in line and VIEWER_INSTALL in line
