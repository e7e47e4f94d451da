"""The napari image reader (issue 5 item 7), without a viewer: layer data
tuples with scale in mm, units, VOI window as contrast limits, a file name."""

import numpy as np
import pytest

from dicom_factory import make_mammo_dicom, monochrome1_of
from napari_calc.plugin.reader import get_reader


def _layer(path):
    reader = get_reader(str(path))
    assert reader is not None
    (data, kw, kind), = reader(str(path))
    return data, kw, kind


def test_dicom_layer_scale_units_window_and_name(tmp_path):
    px = (np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) % 4000)
    path = tmp_path / "RCC_patient"  # no extension: recognised by content
    make_mammo_dicom(path, px, bits_stored=12, imager_pixel_spacing=(0.1, 0.1), magnification=1.25,
                     window=(2000, 1000))
    data, kw, kind = _layer(path)
    assert kind == "image"
    assert kw["name"] == "RCC_patient"
    assert kw["scale"] == pytest.approx((0.08, 0.08))  # detector spacing / magnification
    assert kw["units"] == ("mm", "mm")
    assert kw["axis_labels"] == ("row", "col")
    assert kw["contrast_limits"] == pytest.approx((1500.0, 2500.0))
    np.testing.assert_array_equal(np.asarray(data), px)  # the window is display only


def test_monochrome1_window_follows_the_inversion(tmp_path):
    px = (np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) % 4000)
    path = tmp_path / "m1.dcm"
    make_mammo_dicom(path, monochrome1_of(px, 12), photometric="MONOCHROME1", bits_stored=12,
                     pixel_spacing=(0.07, 0.07), window=(1000, 500))
    data, kw, _ = _layer(path)
    np.testing.assert_array_equal(np.asarray(data), px)
    lo, hi = kw["contrast_limits"]
    assert hi - lo == pytest.approx(500.0)
    assert (lo + hi) / 2 == pytest.approx(4095 - 1000)


def test_non_images_are_declined(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert get_reader(str(tmp_path / "notes.txt")) is None


def test_a_file_named_like_an_image_that_is_not_one_gets_its_reason(tmp_path):
    """napari said only "Reader 'napari-calc' ... refused the file"."""
    from napari_calc.core.errors import NapariCalcError

    (tmp_path / "junk.tif").write_text("not a tiff at all")
    (tmp_path / "x.dcm").write_bytes(b"\x00" * 200)
    for name in ("junk.tif", "x.dcm"):
        reader = get_reader(str(tmp_path / name))
        assert reader is not None
        with pytest.raises(NapariCalcError) as info:
            reader(str(tmp_path / name))
        assert name in str(info.value) and "\n" not in str(info.value)
    for export in ("img.sr.dcm", "img.cad-sr.dcm"):  # exports: the other reader's
        (tmp_path / export).write_bytes(b"\x00" * 200)
        assert get_reader(str(tmp_path / export)) is None


def _exam(folder, views=(("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))):
    """An exam folder: one file per view, one study, one series (as many
    FFDM units store a screening exam)."""
    from pydicom.uid import generate_uid

    study, series = generate_uid(), generate_uid()
    folder.mkdir()
    px = {}
    for k, (lat, view) in enumerate(views):
        a = (np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * (k + 1)) % 4000
        make_mammo_dicom(folder / f"{lat}{view}.dcm", a, laterality=lat, view=view, study_uid=study,
                         series_uid=series, instance_number=k + 1, pixel_spacing=(0.07, 0.07))
        px[f"{lat}{view}"] = a
    return px


def test_an_exam_folder_opens_one_layer_per_view(tmp_path):
    """Dropping an exam's folder on napari (or ``napari-calc view exam/``)
    said "folder holds 4 images of one series that do not form a volume
    (different views or lateralities); open the files separately"."""
    px = _exam(tmp_path / "exam")
    reader = get_reader(str(tmp_path / "exam"))
    assert reader is not None
    layers = reader(str(tmp_path / "exam"))
    assert [kw["name"] for _, kw, _ in layers] == sorted(px)
    for data, kw, kind in layers:
        assert kind == "image" and kw["scale"] == pytest.approx((0.07, 0.07))
        np.testing.assert_array_equal(np.asarray(data), px[kw["name"]])


def test_an_exam_folder_with_a_damaged_file_opens_the_others_and_names_it(tmp_path):
    px = _exam(tmp_path / "exam", views=(("R", "CC"), ("L", "CC")))
    (tmp_path / "exam" / "RMLO.dcm").write_bytes(b"\x00" * 200)  # named like an image, is none
    with pytest.warns(UserWarning, match=r"RMLO\.dcm: .*\(the folder's other images are open\)"):
        layers = get_reader(str(tmp_path / "exam"))(str(tmp_path / "exam"))
    assert [kw["name"] for _, kw, _ in layers] == sorted(px)


def test_a_folder_of_a_series_is_still_one_volume_and_a_dataset_folder_is_refused(tmp_path):
    from dicom_factory import make_series
    from napari_calc.core.errors import NapariCalcError
    from napari_calc.plugin import reader as reader_mod

    vol = (np.arange(5 * 32 * 40, dtype=np.uint16).reshape(5, 32, 40) % 3000)
    make_series(tmp_path / "dbt", vol, modality="MG")
    (data, kw, _), = get_reader(str(tmp_path / "dbt"))(str(tmp_path / "dbt"))
    np.testing.assert_array_equal(np.asarray(data), vol)
    assert kw["axis_labels"] == ("slice", "row", "col")  # the slider says "slice", not "-3"

    (tmp_path / "many").mkdir()
    for k in range(reader_mod.MAX_FOLDER_IMAGES + 1):
        make_mammo_dicom(tmp_path / "many" / f"im{k:02d}.dcm", vol[0])
    with pytest.raises(NapariCalcError, match=r"many: folder holds 17 images, more than the 16") as info:
        get_reader(str(tmp_path / "many"))(str(tmp_path / "many"))
    assert "\n" not in str(info.value)
