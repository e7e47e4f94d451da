"""Helpers for the napari GUI tests (imported by tests/test_gui_*.py only)."""

from __future__ import annotations

import contextlib

import numpy as np

PLUGIN = "napari-calc"
DETECT = "Detect calcifications"
REVIEW = "Review calcifications"


def dock_both(viewer):
    """Dock both panels through napari's plugin machinery; return them."""
    _, detect_w = viewer.window.add_plugin_dock_widget(PLUGIN, DETECT)
    _, review_w = viewer.window.add_plugin_dock_widget(PLUGIN, REVIEW)
    return detect_w, review_w


def run_detection(qtbot, detect_w, layer=None, timeout=60_000):
    """Run the detect panel on ``layer`` (or its current choice) and wait."""
    if layer is not None:
        detect_w.image_combo.value = layer
    worker = detect_w.run()
    assert worker is not None, detect_w.status.value
    qtbot.waitUntil(lambda: detect_w.worker is None, timeout=timeout)
    return worker


def tick_timer(period_s: float = 0.002):
    """A started, precise Qt timer and the list of ``perf_counter`` times it
    ticked at: how the tests see whether the event loop is running."""
    import time

    from qtpy.QtCore import Qt, QTimer

    ticks: list[float] = []
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(round(period_s * 1000))
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    return timer, ticks


@contextlib.contextmanager
def timing_window(qtbot, ticks: list, period_s: float, timeout_ms: int = 30_000):
    """Keep two things that are not what a responsiveness test times out
    of the ``with`` block.

    The GUI work the test's set-up queued (layers added with no event loop
    running: 59-95 ms here with the cores busy) runs first: wait until the
    timer of :func:`tick_timer` ticks steadily (ten ticks in a row, no gap
    over 5 periods or 10 ms). And Python's garbage collector would walk,
    in a full collection, every object the earlier tests left in this
    process (about 900,000; 0.34 s for 305,000 here under load): collect them
    now and freeze them, so that a collection inside the block walks only
    the objects made there.
    """
    import gc

    steady = max(5 * period_s, 0.01)  # s: the longest gap of ten ticks in a row that counts as idle
    qtbot.waitUntil(lambda: len(ticks) > 10 and np.diff(ticks[-10:]).max() < steady, timeout=timeout_ms)
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def full_field_image(shape=(4096, 3328), seed=0):
    """A cheap full-field-sized test image: smooth 'breast' + noise + dots."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 1500 + 800 * np.exp(-(((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.7 * w)) ** 2))
    img = img.astype(np.float32) + rng.normal(0, 20, size=shape).astype(np.float32)
    for r, c in rng.integers(200, min(h, w) - 200, size=(60, 2)):
        img[r - 2:r + 3, c - 2:c + 3] += 300
    return np.clip(img, 0, 65535).astype(np.uint16)


def press(qtbot, viewer, key, modifier=None):
    """A real key press on the napari canvas (goes through napari's keymaps)."""
    from qtpy.QtCore import Qt

    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    mod = Qt.KeyboardModifier.NoModifier if modifier is None else modifier
    qtbot.keyClick(canvas, key, mod)


def hold_stacks_until_cancelled(monkeypatch):
    """Make ``detect`` wait, for a stack, at its first check for Cancel
    after the first slice has started, until Cancel is pressed: the stack
    is then in flight when the test presses it, however fast the machine
    (the tests relied on a stack of many slices taking long enough).
    Returns the list of the holds made, for the test to check that one
    was."""
    import importlib
    import time

    detect_module = importlib.import_module("napari_calc.core.detect")  # (the package exports the function)

    real = detect_module.detect
    holds = []

    def held(image, *args, cancel=None, progress=None, **kw):
        if getattr(image, "ndim", 0) != 3 or cancel is None:
            return real(image, *args, cancel=cancel, progress=progress, **kw)
        started = []

        def report(f, m):
            started.append(m)
            if progress is not None:
                progress(f, m)

        def hold():
            if any(m.startswith("detecting slice") for m in started):
                holds.append(len(started))
                deadline = time.monotonic() + 60
                while not cancel() and time.monotonic() < deadline:
                    time.sleep(0.005)
            return cancel()

        return real(image, *args, cancel=hold, progress=report, **kw)

    monkeypatch.setattr(detect_module, "detect", held)
    return holds
