"""napari GUI tests of the Detect panel's "Run on all images" (real napari, Xvfb).

An exam opened from its folder is one image layer per view; the panel
detects on all of them in one worker, one after another.
"""

from __future__ import annotations

import importlib
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from gui_helpers import dock_both  # noqa: E402

from napari_calc.core.detect import detect  # noqa: E402
from napari_calc.core.phantom import make_phantom  # noqa: E402

VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))


def _view(seed, lat="L", view="CC"):
    """A small phantom view: 40 x 30 mm at 0.1 mm (400 x 300 px), one cluster."""
    return make_phantom(seed=seed, size_mm=(40, 30), n_clusters=1, laterality=lat, view=view).image


def _add(viewer, image, name, scaled=True):
    """An image layer as the napari-calc reader makes it (spacing in the
    metadata and the scale), or without any physical scale."""
    from napari_calc.plugin.reader import image_layer_data

    if not scaled:
        return viewer.add_image(image.pixels, name=name)
    data, kw, _ = image_layer_data(image, name)
    return viewer.add_image(data, **kw)


def _run_all(qtbot, detect_w, timeout=60_000):
    worker = detect_w.run_all()
    assert worker is not None, detect_w.status.value
    qtbot.waitUntil(lambda: detect_w.worker is None, timeout=timeout)
    return worker


def _result_names(viewer):
    return sorted(lay.name for lay in viewer.layers if (lay.metadata.get("napari_calc") or {}).get("kind"))


def test_run_on_all_views_of_an_exam_folder_keeps_the_event_loop_running(qtbot, make_napari_viewer, tmp_path,
                                                                         monkeypatch):
    """The four views of an exam folder, opened with the reader, each get the
    result layers a single Run gives them; the status says which image is
    under way ("2 of 4: LMLO"); Qt's event loop ticks while the worker
    detects; labels and RGB layers are left out."""
    from dicom_factory import make_mammo_dicom
    from gui_helpers import tick_timer, timing_window

    folder = tmp_path / "exam"
    folder.mkdir()
    pixels = {}
    for k, (lat, view) in enumerate(VIEWS):
        img = _view(10 + k, lat, view)
        make_mammo_dicom(folder / f"{lat}{view}.dcm", img.pixels, laterality=lat, view=view,
                         pixel_spacing=(0.1, 0.1))
        pixels[f"{lat}{view}"] = img.pixels
    viewer = make_napari_viewer()
    detect_w, review_w = dock_both(viewer)
    views = viewer.open(str(folder), plugin="napari-calc")
    names = [lay.name for lay in views]
    assert sorted(names) == sorted(pixels)
    viewer.add_labels(np.zeros((400, 300), np.uint8), name="mask")  # not an image
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="photo", rgb=True)  # not a mammogram
    assert [lay.name for lay in detect_w.detectable_layers()] == names

    # a small view is detected in ~10 ms, far less than napari takes to add
    # its layers: slowed to a full-field view's time, the run is mostly in
    # the worker, which is what this test is about
    core_detect = importlib.import_module("napari_calc.core.detect")
    real_detect = core_detect.detect

    def full_field_time(*args, **kwargs):
        time.sleep(0.3)
        return real_detect(*args, **kwargs)

    monkeypatch.setattr(core_detect, "detect", full_field_time)
    statuses = []
    # the panel's own slot runs first (connected first): record what it shows
    detect_w._relay.batch_progress.connect(lambda *_: statuses.append(detect_w.status.value))
    period = 0.002
    timer, ticks = tick_timer(period)
    with timing_window(qtbot, ticks, period):
        t0 = time.perf_counter()
        worker = detect_w.run_all()
        assert worker is not None
        assert not detect_w.run_button.enabled and not detect_w.run_all_button.enabled
        assert detect_w.cancel_button.enabled
        qtbot.waitUntil(lambda: detect_w.worker is None, timeout=60_000)
        t1 = time.perf_counter()
        timer.stop()

    # a blocked event loop gives ~0 ticks; a free one ~duration / period (less
    # the time napari takes to add each view's result layers, ~0.3 s)
    during = [t for t in ticks if t0 <= t <= t1]
    print(f"all 4 views in {t1 - t0:.2f} s, {len(during)} ticks of a {period * 1000:.0f} ms timer, "
          f"longest gap {np.diff([t0] + during + [t1]).max() * 1000:.0f} ms")
    assert t1 - t0 > 4 * 0.3
    assert len(during) >= max(20, 0.1 * (t1 - t0) / period)
    assert np.diff([t0] + during + [t1]).max() < 1.0
    # progress named each image in turn, as "k of n: name"
    for k, name in enumerate(names):
        assert any(s.startswith(f"{k + 1} of 4: {name} — ") for s in statuses), (name, statuses)
    assert detect_w.status.value.startswith("All 4 images done: "), detect_w.status.value
    assert detect_w.progress.value == 100
    assert detect_w.run_button.enabled and detect_w.run_all_button.enabled
    assert not detect_w.cancel_button.enabled

    expected = sorted([f"{n} calcifications" for n in names] + [f"{n} clusters" for n in names])
    assert _result_names(viewer) == expected
    for name in names:
        pts = viewer.layers[f"{name} calcifications"]
        md = pts.metadata["napari_calc"]
        assert md["source_layer"] == name
        assert md["params"]["threshold"] == detect_w.params["threshold"].value
        assert tuple(pts.scale) == pytest.approx((0.1, 0.1))
        ref = detect(pixels[name], (0.1, 0.1), **detect_w.get_params())  # what a single Run finds
        np.testing.assert_array_equal(pts.data, ref.calcifications[["row", "col"]].to_numpy(float))
        assert len(viewer.layers[f"{name} clusters"].data) == len(ref.clusters)
    assert _result_names(viewer).count(f"{names[0]} calcifications") == 1
    # the review panel follows the new calcifications layers, as after single runs
    assert review_w.layer is not None and review_w.layer.name.endswith(" calcifications")


def test_a_failing_image_is_named_and_the_others_still_get_results(qtbot, make_napari_viewer):
    """Too small, and no pixel size on an image not chosen in the panel: both
    named with their reason in one status line; the other images finish.
    The image chosen in the panel uses the spacing entered for it."""
    viewer = make_napari_viewer()
    detect_w, _ = dock_both(viewer)
    _add(viewer, _view(1), "RCC")
    viewer.add_image(np.full((32, 32), 1000, np.uint16), name="tiny", scale=(0.1, 0.1), units=("mm", "mm"))
    _add(viewer, _view(2), "noscale", scaled=False)
    chosen = _add(viewer, _view(3), "entered", scaled=False)
    _add(viewer, _view(4), "LMLO")
    detect_w.image_combo.value = chosen
    detect_w.spacing.value = 0.1  # entered for the chosen layer only
    _run_all(qtbot, detect_w)

    text = detect_w.status.value
    assert "\n" not in text
    assert text.startswith("3 of 5 images done ("), text
    assert "'tiny' failed: " in text and "too small" in text, text
    assert "'noscale' failed: no physical pixel size" in text, text
    assert _result_names(viewer) == sorted(f"{n} {kind}" for n in ("RCC", "entered", "LMLO")
                                           for kind in ("calcifications", "clusters"))
    assert tuple(chosen.scale) == pytest.approx((0.1, 0.1))  # the entered spacing, applied
    assert tuple(viewer.layers["noscale"].scale) == pytest.approx((1.0, 1.0))  # no guess spread to it
    assert len(viewer.layers["RCC calcifications"].data) > 0
    assert detect_w.run_button.enabled and detect_w.run_all_button.enabled


def test_nothing_to_detect_on_is_said(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    detect_w, _ = dock_both(viewer)
    viewer.add_labels(np.zeros((400, 300), np.uint8), name="mask")
    assert detect_w.run_all() is None
    assert detect_w.status.value.startswith("No image layer to detect on")
    assert detect_w.run_all_button.enabled


def test_cancel_stops_the_run_keeps_images_done_and_adds_nothing_for_the_one_in_flight(
        qtbot, make_napari_viewer, monkeypatch):
    from gui_helpers import full_field_image, hold_stacks_until_cancelled

    viewer = make_napari_viewer()
    detect_w, _ = dock_both(viewer)
    _add(viewer, _view(1), "first")
    plane = full_field_image((512, 512), seed=3)
    # held in its first slice until Cancel is pressed
    holds = hold_stacks_until_cancelled(monkeypatch)
    stack = np.stack([np.roll(plane, k, axis=1) for k in range(4)])
    viewer.add_image(stack, name="big", scale=(1.0, 0.1, 0.1), units=("mm",) * 3)
    _add(viewer, _view(2), "last")
    worker = detect_w.run_all()
    assert worker is not None
    qtbot.waitUntil(lambda: detect_w.status.value.startswith("2 of 3: big — detecting slice"),
                    timeout=30_000)  # the stack is in flight
    qtbot.mouseClick(detect_w.cancel_button.native, _left())
    qtbot.waitUntil(lambda: detect_w.worker is None, timeout=60_000)
    assert holds, "the stack was not held in flight"

    assert detect_w.status.value.startswith("Cancelled: 1 of 3 images done ("), detect_w.status.value
    assert _result_names(viewer) == ["first calcifications", "first clusters"]
    assert detect_w.progress.value == 0
    assert detect_w.run_button.enabled and detect_w.run_all_button.enabled
    assert not detect_w.cancel_button.enabled
    # usable again: a fresh run completes (the stack left out to keep it quick)
    viewer.layers.remove("big")
    _run_all(qtbot, detect_w)
    assert detect_w.status.value.startswith("All 2 images done"), detect_w.status.value
    assert "last calcifications" in viewer.layers


def test_rerun_replaces_results_in_place_and_leaves_reviewed_images_alone(qtbot, make_napari_viewer):
    """A re-run updates each image's result layers in place, as a single
    re-run does; an image whose results hold review decisions is left as it
    is and named (the review is never overwritten)."""
    viewer = make_napari_viewer()
    detect_w, review_w = dock_both(viewer)
    _add(viewer, _view(1), "RCC")
    _add(viewer, _view(2), "LCC")
    _run_all(qtbot, detect_w)
    names_before = [lay.name for lay in viewer.layers]
    rcc, lcc = viewer.layers["RCC calcifications"], viewer.layers["LCC calcifications"]
    lcc_before = lcc.data.copy()

    review_w.layer_combo.value = rcc
    qtbot.waitUntil(lambda: review_w.layer is rcc and review_w.session is not None)
    ids = review_w.session.detections.calcifications["calc_id"].to_numpy()[:2]
    review_w.session.accept(ids)
    qtbot.waitUntil(lambda: (rcc.features["status"] == "accepted").sum() == 2)
    rcc_data = rcc.data.copy()
    rcc_run = rcc.metadata["napari_calc"]["run"]

    lcc_run = lcc.metadata["napari_calc"]["run"]
    detect_w.params["threshold"].value = 40.0  # next to nothing found
    _run_all(qtbot, detect_w)
    assert [lay.name for lay in viewer.layers] == names_before  # no duplicates
    assert viewer.layers["LCC calcifications"] is lcc  # same layer, updated
    assert lcc.metadata["napari_calc"]["run"] != lcc_run
    assert len(lcc.data) < len(lcc_before) and len(lcc.features) == len(lcc.data)
    assert lcc.metadata["napari_calc"]["params"]["threshold"] == detect_w.params["threshold"].value
    # the reviewed image: untouched, its decisions kept
    np.testing.assert_array_equal(rcc.data, rcc_data)
    assert rcc.metadata["napari_calc"]["run"] == rcc_run
    assert sorted(rcc.features.loc[rcc.features["status"] == "accepted", "calc_id"]) == sorted(ids)
    text = detect_w.status.value
    assert text.startswith("1 of 2 images done (") and "\n" not in text, text
    assert "'RCC' left as it is: its results are reviewed" in text, text


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_a_stack_among_2d_views_gets_the_tomosynthesis_preset(qtbot, make_napari_viewer):
    """One parameter set served every image: a tomosynthesis stack opened
    with 2-D views was detected with the 2-D preset (a single Run on it
    switches to the tomosynthesis one). Parameters set by hand still go to
    every image as they are."""
    from napari_calc.core.detect import PRESETS
    from napari_calc.plugin.detect_widget import CUSTOM_PRESET

    viewer = make_napari_viewer()
    detect_w, _ = dock_both(viewer)
    flat = _add(viewer, _view(21), "flat")
    stack_img = _view(22)
    stack = viewer.add_image(np.stack([stack_img.pixels] * 3), name="stack", scale=(1.0, 0.1, 0.1),
                             metadata={"napari_calc": {"spacing_mm": (1.0, 0.1, 0.1), "image_metadata": {}}})
    detect_w.image_combo.value = flat
    two_d = detect_w.preset.value
    assert "tomo" not in two_d.lower()
    tomo = next(k for k in PRESETS if "tomo" in k.lower())
    assert PRESETS[tomo]["threshold"] != PRESETS[two_d]["threshold"]
    _run_all(qtbot, detect_w)
    used = {lay.name: lay.metadata["napari_calc"]["params"]["threshold"]
            for lay in viewer.layers if lay.name in ("flat calcifications", "stack calcifications")}
    assert used == {"flat calcifications": PRESETS[two_d]["threshold"],
                    "stack calcifications": PRESETS[tomo]["threshold"]}
    assert detect_w.preset.value == two_d  # the panel itself is left as it was

    detect_w.params["threshold"].value = 4.2
    assert detect_w.preset.value == CUSTOM_PRESET
    _run_all(qtbot, detect_w)
    used = {lay.name: lay.metadata["napari_calc"]["params"]["threshold"]
            for lay in viewer.layers if lay.name in ("flat calcifications", "stack calcifications")}
    assert used == {"flat calcifications": 4.2, "stack calcifications": 4.2}
