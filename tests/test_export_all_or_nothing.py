"""The exports of one image are written all or nothing: a failure leaves no
part of the set and the files of an earlier run as they were."""

from __future__ import annotations

import os

import pytest

from napari_calc.core.export import write_outputs
from napari_calc.core.export._common import ExportError

from _export_data import make_detections

FORMATS = ["json", "mrk.json", "sr.dcm", "cad-sr.dcm"]


def _listing(folder):
    return sorted(os.listdir(folder))


def test_a_folder_in_the_way_writes_nothing(tmp_path):
    det = make_detections(2)
    (tmp_path / "img.sr.dcm").mkdir()
    with pytest.raises(ExportError, match=r"img\.sr\.dcm: a folder of that name is in the way"):
        write_outputs(det, tmp_path, "img", formats=FORMATS)
    assert _listing(tmp_path) == ["img.sr.dcm"]


def test_a_writer_failing_midway_leaves_the_earlier_set(tmp_path, monkeypatch):
    det = make_detections(2)
    first = write_outputs(det, tmp_path, "img", formats=FORMATS)
    before = {p: p.read_bytes() for p in map(lambda q: tmp_path / q.name, first.values())}

    from napari_calc.core.export import cad_sr

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cad_sr, "write_cad_sr", full_disk)
    det2 = make_detections(2)
    det2.calcifications["score"] = 0.5  # different content: a partial write would show
    with pytest.raises(ExportError, match=r"cannot write img\.cad-sr\.dcm \(No space left on device\)"):
        write_outputs(det2, tmp_path, "img", formats=FORMATS)
    assert _listing(tmp_path) == sorted(p.name for p in before)  # no temporaries left
    assert {p: p.read_bytes() for p in before} == before


def test_nothing_left_when_the_first_format_fails(tmp_path, monkeypatch):
    from napari_calc.core.export import csv_io

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(csv_io, "write_csv", denied)
    with pytest.raises(ExportError, match="Permission denied"):
        write_outputs(make_detections(2), tmp_path, "img", formats=FORMATS)
    assert _listing(tmp_path) == []


def test_a_full_disk_re_raised_by_a_library_is_one_short_reason(tmp_path, monkeypatch):
    """pydicom re-raises the OSError with the tag and a whole traceback in its
    text (and no errno): that text reached the one-line error."""
    from napari_calc.core.export import cad_sr

    def pydicom_like(*a, **k):
        try:
            raise OSError(28, "No space left on device")
        except OSError as e:
            raise OSError("With tag (0040,A730) got exception: [Errno 28] No space left on device\n"
                          "Traceback (most recent call last):\n  File ...") from e

    monkeypatch.setattr(cad_sr, "write_cad_sr", pydicom_like)
    with pytest.raises(ExportError) as info:
        write_outputs(make_detections(2), tmp_path, "img", formats=FORMATS)
    assert str(info.value).endswith("cannot write img.cad-sr.dcm (No space left on device)")
