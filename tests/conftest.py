"""Shared pytest configuration.

GUI tests (``tests/test_gui_*.py``) run real napari under Xvfb:

    xvfb-run -a -s "-screen 0 1600x1000x24" python -m pytest tests/test_gui_*.py

When one fails, a screenshot of every open napari window is saved in
``test-artifacts/<test name>.png``. Nothing here imports napari or Qt at
module level, so the rest of the suite runs without them.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from _background import BACKGROUND, job  # (pytest puts tests/ on sys.path for this file)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source tree without installing
    sys.path.insert(0, str(ROOT))

ARTIFACTS = ROOT / "test-artifacts"


@job("serial_kernel")
def _build_serial_kernel(folder: Path, run):
    from test_kernel_reference import build_serial_kernel

    return build_serial_kernel(folder, run=run)


@pytest.fixture(scope="session")
def serial_kernel():
    """The kernel's C built without OpenMP and without the AVX2/AVX-512
    clones, loaded with ctypes (``test_kernel_reference.SerialKernel``):
    built once for the session here (in the background from the start:
    see _background.py), as a fixture defined in one module and imported
    into others would be built once in each."""
    return BACKGROUND.result("serial_kernel")


@pytest.fixture
def spy(monkeypatch):
    """``spy(obj, name)`` replaces ``obj.name`` by a wrapper that records
    each call's positional arguments in the list it returns, and calls the
    real one."""
    def install(obj, name):
        calls, real = [], getattr(obj, name)

        def wrapper(*a, **k):
            calls.append(a)
            return real(*a, **k)

        monkeypatch.setattr(obj, name, wrapper)
        return calls
    return install


def _save_failure_screenshots(item) -> list[str]:
    if "napari" not in sys.modules:
        return []
    saved = []
    try:
        import napari
        from napari.viewer import Viewer

        viewers = list(getattr(Viewer, "_instances", []) or [])
        if not viewers and napari.current_viewer() is not None:
            viewers = [napari.current_viewer()]
        ARTIFACTS.mkdir(exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)
        for k, v in enumerate(viewers):
            path = ARTIFACTS / (f"{stem}.png" if k == 0 else f"{stem}-{k}.png")
            try:
                v.screenshot(path=str(path), canvas_only=False, flash=False)
            except TypeError:  # older napari without flash=
                v.screenshot(path=str(path), canvas_only=False)
            saved.append(str(path))
    except Exception as exc:  # never hide the real failure
        saved.append(f"(screenshot failed: {type(exc).__name__}: {exc})")
    return saved


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed and Path(str(item.fspath)).name.startswith("test_gui_"):
        saved = _save_failure_screenshots(item)
        if saved:
            rep.sections.append(("napari screenshots", "\n".join(saved)))


def pytest_collection_finish(session):
    """Start the background jobs (_background.py) of the fixtures that
    the selected tests use."""
    if session.config.option.collectonly:
        return
    used = set()
    for item in session.items:
        used.update(getattr(item, "fixturenames", ()))
    BACKGROUND.start(sorted(used))


def pytest_unconfigure(config):
    BACKGROUND.stop()


def pytest_collection_modifyitems(config, items):
    """GUI tests need a display: skip them (visibly) when there is none."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    skip = pytest.mark.skip(reason="needs a display: run under xvfb-run (see README)")
    for it in items:
        if Path(str(it.fspath)).name.startswith("test_gui_"):
            it.add_marker(skip)
