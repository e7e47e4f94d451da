"""Helpers for the napari GUI tests (imported by tests/test_gui_*.py only)."""

from __future__ import annotations

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
