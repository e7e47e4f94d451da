"""The bad-input corpus, case by case: each gives its own error class and a
one-line message that names the file."""

from __future__ import annotations

import os
import struct
import sys

import numpy as np
import pytest
import tifffile

sys.path.insert(0, os.path.dirname(__file__))
from dicom_factory import make_mammo_dicom, make_non_image_dicom, make_tomo_dicom  # noqa: E402

from napari_calc.core.errors import (  # noqa: E402
    ImageTooLargeError,
    InvalidParameterError,
    MissingDecoderError,
    NapariCalcError,
    UnreadableImageError,
    UnsupportedImageError,
)
from napari_calc.core.image import MammoImage  # noqa: E402
from napari_calc.core.read import find_inputs, read_image  # noqa: E402

PIX = np.random.default_rng(11).integers(0, 4096, size=(64, 64)).astype(np.uint16)


def _fails(path, cls, match=None):
    """read_image(path) raises exactly ``cls``; one line naming the file."""
    with pytest.raises(NapariCalcError) as info:
        read_image(path)
    err = info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    msg = str(err)
    assert "\n" not in msg
    assert os.path.basename(os.fspath(path)) in msg
    assert err.path == os.fspath(path)
    if match:
        assert match in msg, msg
    return msg


# ------------------------------------------------------------------ files


def test_missing_file(tmp_path):
    _fails(tmp_path / "nope.dcm", UnreadableImageError, "not found")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.dcm"
    p.write_bytes(b"")
    _fails(p, UnreadableImageError, "empty")


def test_text_file(tmp_path):
    p = tmp_path / "readme.dcm"
    p.write_text("This is not an image.\n" * 20)
    _fails(p, UnreadableImageError, "not a DICOM or TIFF")


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.tif"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 4000).astype(np.uint8).tobytes())
    _fails(p, UnreadableImageError)


def test_folder_without_images(tmp_path):
    d = tmp_path / "nothing"
    d.mkdir()
    (d / "a.txt").write_text("x")
    _fails(d, UnsupportedImageError, "no DICOM image")


# ------------------------------------------------------------------ DICOM


@pytest.fixture()
def good_dicom(tmp_path):
    p = tmp_path / "good.dcm"
    make_mammo_dicom(p, PIX, bits_stored=12)
    return p


@pytest.mark.parametrize("cut", [140, 300, 700, -1000, -2])
def test_truncated_dicom(tmp_path, good_dicom, cut):
    data = good_dicom.read_bytes()
    p = tmp_path / f"truncated{cut}.dcm"
    p.write_bytes(data[:cut])
    _fails(p, UnreadableImageError, "truncated")


@pytest.mark.parametrize("ts", ["j2k_lossless", "rle"])
def test_truncated_compressed_dicom(tmp_path, ts):
    src = tmp_path / "c.dcm"
    make_mammo_dicom(src, PIX, bits_stored=12, transfer_syntax=ts)
    data = src.read_bytes()
    p = tmp_path / f"truncated_{ts}.dcm"
    p.write_bytes(data[: len(data) * 2 // 3])
    _fails(p, UnreadableImageError, "truncated")


def test_corrupt_compressed_stream(tmp_path):
    """Fragment bytes garbled (right length): a decode error, not a crash."""
    src = tmp_path / "c.dcm"
    make_mammo_dicom(src, PIX, bits_stored=12, transfer_syntax="j2k_lossless")
    data = bytearray(src.read_bytes())
    start = data.find(b"\xff\x4f\xff\x51")  # J2K codestream SOC + SIZ
    assert start > 0
    data[start: start + 200] = b"\x00" * 200
    p = tmp_path / "garbled.dcm"
    p.write_bytes(bytes(data))
    _fails(p, UnreadableImageError, "cannot decode")


def test_dicom_without_pixel_data(tmp_path):
    p = tmp_path / "nopixels.dcm"
    make_mammo_dicom(p, PIX, with_pixel_data=False)
    _fails(p, UnsupportedImageError, "no pixel data")


@pytest.mark.parametrize("kind,with_pixels,word", [("SR", False, "SR"), ("SEG", True, "SEG"), ("SEG", False, "SEG")])
def test_non_image_dicom(tmp_path, kind, with_pixels, word):
    p = tmp_path / f"{kind.lower()}_object"
    make_non_image_dicom(p, kind, with_pixels=with_pixels)
    _fails(p, UnsupportedImageError, word)


def test_our_sr_output_skipped_by_find_inputs(tmp_path, good_dicom):
    make_non_image_dicom(tmp_path / "good.sr.dcm", "SR")
    make_non_image_dicom(tmp_path / "other_sr_without_extension", "SR")
    (tmp_path / "good.calcifications.csv").write_text("calc_id,row\n")
    (tmp_path / "good.mrk.json").write_text("{}")
    (tmp_path / "good.json").write_text("{}")
    assert find_inputs([tmp_path]) == [os.fspath(good_dicom)]
    # a file named explicitly is kept, so that reading it reports why
    assert find_inputs([tmp_path / "good.json"]) == [os.fspath(tmp_path / "good.json")]


def _patch_missing_decoder(monkeypatch, uid):
    from pydicom.pixels import get_decoder

    dec = get_decoder(uid)
    monkeypatch.setattr(dec, "_available", {})
    monkeypatch.setattr(dec, "_unavailable", {"pylibjpeg": ("numpy", "pylibjpeg", "pylibjpeg-openjpeg")})
    assert not dec.is_available


def test_missing_decoder_names_package(tmp_path, monkeypatch):
    from pydicom.uid import JPEG2000Lossless

    p = tmp_path / "j2k.dcm"
    make_mammo_dicom(p, PIX, bits_stored=12, transfer_syntax="j2k_lossless")
    read_image(p)  # fine with the decoder
    _patch_missing_decoder(monkeypatch, JPEG2000Lossless)
    msg = _fails(p, MissingDecoderError, "pylibjpeg-openjpeg")
    assert "install" in msg
    assert issubclass(MissingDecoderError, UnsupportedImageError)


def test_missing_decoder_jpegls(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    p = tmp_path / "jls.dcm"
    make_mammo_dicom(p, PIX, bits_stored=12, transfer_syntax="jpegls_lossless")
    dec = get_decoder(JPEGLSLossless)
    monkeypatch.setattr(dec, "_available", {})
    _fails(p, MissingDecoderError, "pyjpegls")


def test_unsupported_transfer_syntax(tmp_path):
    p = tmp_path / "mpeg.dcm"
    make_mammo_dicom(p, PIX, bits_stored=12)
    import pydicom

    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
    ds.PixelData = encapsulate([b"\x00" * 100])
    ds["PixelData"].VR = "OB"
    ds.save_as(p, enforce_file_format=True)
    _fails(p, MissingDecoderError, "not supported")


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL", "PALETTE COLOR"])
def test_colour_dicom(tmp_path, photometric):
    p = tmp_path / f"colour_{photometric.replace(' ', '_')}"
    make_mammo_dicom(p, PIX, photometric=photometric)
    _fails(p, UnsupportedImageError, "colour")


def test_rgb_three_samples(tmp_path):
    p = tmp_path / "rgb3.dcm"
    make_mammo_dicom(p, np.zeros((3 * 16, 16), np.uint8), photometric="RGB",
                     extra={"SamplesPerPixel": 3, "PlanarConfiguration": 0, "Rows": 16, "Columns": 16})
    _fails(p, UnsupportedImageError, "colour")


@pytest.mark.parametrize("extra,word", [
    ({"Rows": 60000, "Columns": 60000}, "exceeds"),
    ({"Rows": 65535, "Columns": 65535}, "exceeds"),
    ({"NumberOfFrames": 100000}, "exceeds"),
])
def test_absurd_dimensions_dicom(tmp_path, extra, word):
    """Refused from the header: the pixel data (8 KB) is never decoded."""
    p = tmp_path / "absurd.dcm"
    make_mammo_dicom(p, PIX, bits_stored=12, extra=extra)
    _fails(p, ImageTooLargeError, word)


def test_absurd_dimensions_checked_before_decoding(tmp_path, monkeypatch):
    p = tmp_path / "absurd2.dcm"
    make_mammo_dicom(p, PIX, bits_stored=12, extra={"Rows": 50000, "Columns": 50000})
    from pydicom.dataset import Dataset

    def boom(self):  # pragma: no cover - must not be reached
        raise AssertionError("pixel data decoded before the size check")

    monkeypatch.setattr(Dataset, "pixel_array", property(boom))
    _fails(p, ImageTooLargeError)


@pytest.mark.parametrize("shape", [(1, 1), (1, 64), (64, 1)])
def test_too_small_dicom(tmp_path, shape):
    p = tmp_path / "tiny.dcm"
    make_mammo_dicom(p, np.ones(shape, np.uint16))
    msg = _fails(p, UnsupportedImageError, "too small to detect on")
    assert f"{shape[0]}x{shape[1]}" in msg


def test_bad_user_spacing(tmp_path, good_dicom):
    with pytest.raises(InvalidParameterError) as info:
        read_image(good_dicom, spacing_mm=0)
    assert "good.dcm" in str(info.value)


def test_mixed_series_names_folder(tmp_path):
    d = tmp_path / "mixed_series"
    d.mkdir()
    make_mammo_dicom(d / "a", PIX)
    make_tomo_dicom(d / "b", np.stack([PIX, PIX]))
    _fails(d, UnsupportedImageError, "2 DICOM series")


# ------------------------------------------------------------------ TIFF


@pytest.fixture()
def good_tiff(tmp_path):
    p = tmp_path / "good.tif"
    tifffile.imwrite(p, PIX, compression="zlib")
    return p


@pytest.mark.parametrize("cut", [4, 6, 8, 100, 1000, -200])
def test_truncated_tiff(tmp_path, good_tiff, cut, caplog):
    data = good_tiff.read_bytes()
    p = tmp_path / f"truncated{cut}.tif"
    p.write_bytes(data[:cut])
    with caplog.at_level("DEBUG", logger="tifffile"):
        msg = _fails(p, UnreadableImageError)
    # our one line only: tifffile's own remarks (e.g. "invalid offset to
    # first page") would print before it on stderr
    assert not [r for r in caplog.records if r.name.startswith("tifffile")], caplog.text
    assert "Error" not in msg.split(": ", 1)[1] or cut > 8, msg  # no bare exception names for stubs


def test_rgb_tiff(tmp_path):
    p = tmp_path / "colour.tif"
    tifffile.imwrite(p, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    _fails(p, UnsupportedImageError, "colour")


def test_palette_tiff(tmp_path):
    p = tmp_path / "palette.tif"
    cmap = np.zeros((3, 256), np.uint16)
    tifffile.imwrite(p, np.zeros((32, 32), np.uint8), photometric="palette", colormap=cmap)
    _fails(p, UnsupportedImageError, "colour")


def test_tiny_tiff(tmp_path):
    p = tmp_path / "tiny.tif"
    tifffile.imwrite(p, np.ones((1, 1), np.uint16))
    _fails(p, UnsupportedImageError, "image is 1x1, too small to detect on")


def _patch_tiff_size(path, rows, cols):
    """Rewrite ImageLength / ImageWidth of the first page in place."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offsets = {}
        for code in (256, 257):
            tag = page.tags[code]
            offsets[code] = (tag.valueoffset, tag.dtype)
        byteorder = tif.byteorder
    with open(path, "r+b") as fh:
        for code, value in ((256, cols), (257, rows)):
            off, dtype = offsets[code]
            fh.seek(off)
            fmt = byteorder + ("I" if int(dtype) == 4 else "H")
            fh.write(struct.pack(fmt, value))


@pytest.mark.parametrize("rows,cols", [(60000, 60000), (100000, 10)])
def test_absurd_dimensions_tiff(tmp_path, rows, cols):
    p = tmp_path / "absurd.tif"
    tifffile.imwrite(p, np.zeros((16, 16), np.uint16))
    _patch_tiff_size(p, rows, cols)
    if rows > 65535:  # not representable as SHORT: make sure the patch took
        with tifffile.TiffFile(p) as tif:
            assert tif.pages[0].shape[0] == rows
    _fails(p, ImageTooLargeError, "exceeds")



def test_tiff_missing_codec_names_imagecodecs(tmp_path, monkeypatch):
    """tifffile's own error for a codec it lacks becomes MissingDecoderError."""
    p = tmp_path / "lzw.tif"
    tifffile.imwrite(p, PIX, compression="zlib")

    def no_codec(self, *args, **kwargs):
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", no_codec)
    _fails(p, MissingDecoderError, "imagecodecs")


def test_find_inputs_keeps_broken_dicom(tmp_path, good_dicom):
    """A truncated or pixel-less DICOM in a folder is listed, not lost."""
    data = good_dicom.read_bytes()
    (tmp_path / "cut").write_bytes(data[:-500])
    make_mammo_dicom(tmp_path / "header_only", PIX, with_pixel_data=False)
    make_non_image_dicom(tmp_path / "report", "SR")
    got = find_inputs([tmp_path])
    assert got == sorted(os.fspath(tmp_path / n) for n in ("cut", "good.dcm", "header_only"))
    _fails(tmp_path / "cut", UnreadableImageError, "truncated")
    _fails(tmp_path / "header_only", UnsupportedImageError, "no pixel data")


def test_truncated_imagej_tiff_gives_our_line_only(tmp_path, caplog):
    """A half-length ImageJ TIFF (as the phantom writer makes): tifffile logs
    "ImageJ series metadata invalid or corrupted file" while we read it; only
    our line should reach the user."""
    good = tmp_path / "imagej.tif"
    tifffile.imwrite(good, np.stack([PIX] * 3), imagej=True)
    data = good.read_bytes()
    p = tmp_path / "half.tif"
    p.write_bytes(data[: len(data) // 2])
    with caplog.at_level("DEBUG", logger="tifffile"):
        _fails(p, UnreadableImageError, "truncated")
    assert not [r for r in caplog.records if r.name.startswith("tifffile")], caplog.text


def test_pydicom_warnings_are_held_back(tmp_path):
    """An invalid IS value (read anyway) and twice the pixel bytes (refused):
    pydicom's warnings printed two lines with a library path each, before
    our one line or a clean result."""
    import warnings

    import pydicom

    (tmp_path / "series").mkdir()
    good = tmp_path / "series" / "is.dcm"
    make_mammo_dicom(good, PIX, pixel_spacing=(0.1, 0.1))
    ds = pydicom.dcmread(good)
    ds.InstanceNumber = "7"
    ds.save_as(good)
    raw = good.read_bytes()
    at = raw.find(b"\x20\x00\x13\x00IS\x02\x00")  # (0020,0013) Instance Number, 2 bytes
    assert at > 0
    good.write_bytes(raw[:at + 8] + b"X " + raw[at + 10:])
    excess = tmp_path / "excess.dcm"
    make_mammo_dicom(excess, PIX, pixel_spacing=(0.1, 0.1))
    ds = pydicom.dcmread(excess)
    ds.PixelData = ds.PixelData * 2
    ds.save_as(excess)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = read_image(good)
        assert img.pixels.shape == PIX.shape
        _fails(excess, UnreadableImageError, "header declares")
        assert read_image(tmp_path / "series").pixels.shape == PIX.shape  # as a folder
    assert not [str(w.message) for w in caught]


def test_rescale_slope_zero_is_refused(tmp_path):
    """Slope 0 maps every pixel to the intercept: a flat image that detected
    nothing and ended with exit status 0."""
    path = tmp_path / "slope0.dcm"
    make_mammo_dicom(path, PIX, pixel_spacing=(0.1, 0.1), rescale=(0.0, 5.0))
    _fails(path, UnsupportedImageError, "Rescale Slope/Intercept 0/5 would map every pixel to one value")
    ok = tmp_path / "slope2.dcm"
    make_mammo_dicom(ok, PIX, pixel_spacing=(0.1, 0.1), rescale=(2.0, -5.0))
    assert read_image(ok).pixels.max() == 2 * int(PIX.max()) - 5


def test_decoder_failure_keeps_every_reason(tmp_path):
    """pydicom lists each decoder's reason on its own line; only its first
    line ('...raised by all available plugins:') reached the user."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    path = tmp_path / "wrong-syntax.dcm"
    make_mammo_dicom(path, PIX, pixel_spacing=(0.1, 0.1))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\x00" * 1000])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    with pytest.raises(NapariCalcError) as info:
        read_image(path)
    msg = str(info.value)
    assert "\n" not in msg and "plugins:" in msg
    assert not msg.rstrip(")").endswith("plugins:")  # the reasons follow


def test_number_of_frames_zero_is_named(tmp_path):
    """It said "decoded pixel data has shape (9, 1200, 960), header declares (1200, 960)"."""
    import numpy as np
    import pydicom

    from dicom_factory import make_tomo_dicom
    from napari_calc.core.errors import UnsupportedImageError
    from napari_calc.core.read import read_image

    p = tmp_path / "nf0.dcm"
    make_tomo_dicom(p, np.zeros((3, 16, 16), np.uint16))
    ds = pydicom.dcmread(p)
    ds.NumberOfFrames = 0
    ds.save_as(p)
    with pytest.raises(UnsupportedImageError, match=r"nf0\.dcm: DICOM NumberOfFrames is '0', not a count of frames"):
        read_image(p)


def test_an_image_too_small_for_a_calcification_search_is_refused(tmp_path, capsys):
    """A 3x3 TIFF was "detected" (0 candidates, exit 0) as if it were a mammogram."""
    from napari_calc import detect
    from napari_calc.cli import main
    from napari_calc.core.detect import min_image_side
    from napari_calc.plugin.reader import get_reader

    assert min_image_side(0.07) == 77 and min_image_side(0.1) == 55  # the largest DoG window
    tiny, small = tmp_path / "tiny.tif", tmp_path / "small.tif"
    tifffile.imwrite(tiny, np.arange(9, dtype=np.uint16).reshape(3, 3) * 100)
    tifffile.imwrite(small, PIX[:40, :50], resolution=(100.0, 100.0), resolutionunit="CENTIMETER")
    rc = main(["detect", str(tiny), str(small), "--out", str(tmp_path / "o"), "--workers", "1",
               "--no-progress"])
    err = capsys.readouterr().err.splitlines()
    assert rc != 0 and sorted(err) == [
        f"napari-calc: {small}: image is 40x50 pixels (4 x 5 mm), too small to search for "
        "calcifications: at least 55x55 pixels (5.5 mm) at 0.1 mm per pixel",
        f"napari-calc: {tiny}: image is 3x3 pixels, too small to search for calcifications at "
        "any pixel spacing (at least 5x5 pixels)"]  # said before asking for its spacing
    assert not list((tmp_path / "o").glob("tiny.*")) and not list((tmp_path / "o").glob("small.*"))
    # napari: the reader's layer, detected as the Detect panel does, gives the same line
    data, kw, _ = get_reader(str(small))(str(small))[0]
    image = MammoImage(pixels=data, spacing_mm=kw["scale"],
                       metadata=kw["metadata"]["napari_calc"]["image_metadata"])
    with pytest.raises(UnsupportedImageError) as info:
        detect(image)
    assert f"napari-calc: {info.value}" == sorted(err)[0]


def test_a_long_decoder_failure_is_one_readable_line(tmp_path, monkeypatch):
    """A JPEG 2000 decoder's text (object reprs, a dump running over lines)
    made a 400-character line that did not say which compression it was."""
    import pydicom

    p = tmp_path / "j2k.dcm"
    make_mammo_dicom(p, PIX, bits_stored=12, transfer_syntax="j2k_lossless")
    dump = " ".join(f"{b:02x}" for b in range(256)) * 8
    text = ("Unable to decode as exceptions were raised by all available plugins:\n"
            f"  pylibjpeg: Error decoding the J2K data: failed to decode image; codestream {dump}\n"
            "  pillow: cannot identify image file <_io.BytesIO object at 0x7f6253d624d0>\n"
            "  gdcm: Unable to correctly decode the pixel data\n    (GDCM says:\n    more)")

    def fail(self):
        raise RuntimeError(text)

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(fail))
    msg = _fails(p, UnreadableImageError, "cannot decode the JPEG 2000 Image Compression (Lossless Only) "
                                          "pixel data (truncated or corrupt? failed in all plugins: "
                                          "pylibjpeg: Error decoding the J2K data: failed to decode image")
    reason = msg.split(": ", 1)[1]
    assert len(reason) <= 320, reason
    assert "0x7f" not in msg and "e0 e1" not in msg and "pillow: cannot identify image file;" in msg
