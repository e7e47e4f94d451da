"""``napari-calc view``: open_viewer docks both panels and opens inputs with the plugin."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_calc.core.errors import UnreadableImageError  # noqa: E402
from napari_calc.plugin.viewer import open_viewer  # noqa: E402


def _docked(viewer):
    names = list(viewer.window.dock_widgets) if hasattr(viewer.window, "dock_widgets") \
        else list(viewer.window._dock_widgets)
    return [str(n) for n in names]


def test_open_viewer_with_a_tiff_and_without_inputs(make_napari_viewer, tmp_path):
    import tifffile

    from napari_calc.core.phantom import make_phantom

    img = make_phantom(seed=4, size_mm=(50, 40), n_clusters=1).image.pixels
    path = tmp_path / "IMG_0001"  # no extension: recognised by content
    tifffile.imwrite(path, img, resolution=(100.0, 100.0), resolutionunit="CENTIMETER")

    viewer = open_viewer([str(path)], viewer=make_napari_viewer())
    docked = _docked(viewer)
    assert any(n.startswith("Detect calcifications") for n in docked)
    assert any(n.startswith("Review calcifications") for n in docked)
    (layer,) = viewer.layers
    assert layer.name == "IMG_0001"
    assert tuple(layer.scale) == pytest.approx((0.1, 0.1))
    np.testing.assert_array_equal(layer.data, img)

    viewer2 = open_viewer([], viewer=make_napari_viewer())
    assert [lay.name for lay in viewer2.layers] == ["sample-mammogram"]

    with pytest.raises(UnreadableImageError, match="missing.dcm: file not found"):
        open_viewer([str(tmp_path / "missing.dcm")], viewer=make_napari_viewer())


@pytest.mark.parametrize("flavour", ["sr.dcm", "cad-sr.dcm"])
def test_dicom_sr_exports_reopen_as_layers(make_napari_viewer, tmp_path, flavour):
    """``napari-calc view img.cad-sr.dcm`` ended in "SR is not an image": the
    image reader claimed the ``.dcm`` before the exports' reader saw it."""
    import napari_calc
    from napari_calc.core.export import write_outputs
    from napari_calc.core.phantom import make_phantom

    det = napari_calc.detect(make_phantom(seed=3).image, 0.1)
    assert len(det.clusters) >= 1
    paths = write_outputs(det, tmp_path, "img", formats=[flavour])
    viewer = open_viewer([str(paths[flavour])], viewer=make_napari_viewer())
    kinds = {type(lay).__name__: lay for lay in viewer.layers}
    assert len(kinds["Points"].data) == len(det.calcifications)
    assert len(kinds["Shapes"].data) == len(det.clusters)
    np.testing.assert_allclose(kinds["Points"].features["score"], det.calcifications["score"], rtol=1e-12)


@pytest.mark.parametrize("flavour", ["sr.dcm", "calcifications.csv"])
def test_a_reopened_export_without_its_image_path_autosaves_beside_it(make_napari_viewer, tmp_path,
                                                                     flavour):
    """A reopened DICOM SR (which cannot hold the image's file path) said
    "Autosave off: this image has no file", and its review was not saved."""
    import napari_calc
    from napari_calc.core.export import write_outputs
    from napari_calc.core.phantom import make_phantom
    from napari_calc.plugin.viewer import dock_panels

    det = napari_calc.detect(make_phantom(seed=3).image, 0.1)
    paths = write_outputs(det, tmp_path, "img", formats=["sr.dcm"] if flavour == "sr.dcm" else [])
    path = paths["sr.dcm" if flavour == "sr.dcm" else "csv"]
    viewer = make_napari_viewer()
    _, review = dock_panels(viewer)
    viewer.open(str(path), plugin="napari-calc")
    pts = [lay for lay in viewer.layers if type(lay).__name__ == "Points"][0]
    review.attach(pts)
    sidecar = review.session.sidecar
    assert sidecar is not None and sidecar.parent == tmp_path
    assert "Autosave: " + str(sidecar) in review.autosave_label.text()
    cid = int(det.calcifications.calc_id[0])
    review.session.accept([cid])
    review.detach()
    viewer.layers.clear()
    viewer.open(str(path), plugin="napari-calc")  # reopened: the review is restored
    pts = [lay for lay in viewer.layers if type(lay).__name__ == "Points"][0]
    review.attach(pts)
    assert review.session.row(cid)["status"] == "accepted"
    assert "Restored review from " + str(sidecar) in review.autosave_label.text()


def test_view_of_a_file_no_reader_takes_is_one_line(make_napari_viewer, tmp_path):
    """``napari-calc view notes.txt`` (or a truth.json, an empty folder)
    ended in napari's "Reader 'napari-calc' ... refused the file" traceback."""
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "phantom-0.truth.json").write_text('{"calcifications": []}')
    (tmp_path / "empty").mkdir()
    for name, says in (("notes.txt", "not an image napari-calc reads"),
                       ("phantom-0.truth.json", "not an image napari-calc reads"),
                       ("empty", "no DICOM or TIFF images in this folder")):
        with pytest.raises(UnreadableImageError, match=f"{name}: {says}"):
            open_viewer([str(tmp_path / name)], viewer=make_napari_viewer())


def test_view_of_a_missing_or_empty_input_says_which(make_napari_viewer, tmp_path):
    """``napari-calc view nothere/`` said "file not found" for what is
    clearly meant as a folder; an empty file said it was not an image."""
    (tmp_path / "empty.dcm").write_bytes(b"")
    for name, says in ((f"nothere{os.sep}", "folder not found"),
                       ("nothere.dcm", "file not found"),
                       ("empty.dcm", "file is empty")):
        with pytest.raises(UnreadableImageError, match=f"{re.escape(name)}: {says}$"):
            open_viewer([str(tmp_path) + os.sep + name], viewer=make_napari_viewer())


def test_view_of_an_exam_folder_opens_each_view(make_napari_viewer, tmp_path):
    """``napari-calc view exam/`` for a folder of four views was refused
    ("do not form a volume ... open the files separately")."""
    from test_plugin_reader import _exam

    px = _exam(tmp_path / "exam")
    viewer = open_viewer([str(tmp_path / "exam")], viewer=make_napari_viewer())
    images = [lay for lay in viewer.layers if type(lay).__name__ == "Image"]
    assert sorted(lay.name for lay in images) == sorted(px)
