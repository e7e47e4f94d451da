import json
import os

import numpy as np
import pandas as pd
import pytest

from napari_calc.core.columns import calc_columns, cluster_columns
from napari_calc.core.detections import Detections
from napari_calc.core.errors import InvalidParameterError, NapariCalcError
from napari_calc.core.export import FORMATS, read_detections, write_outputs

from _export_data import assert_same_detections, dicom_metadata, make_detections


@pytest.mark.parametrize("ndim", [2, 3])
def test_csv_columns_and_round_trip(tmp_path, ndim):
    det = make_detections(ndim)
    paths = write_outputs(det, tmp_path, "img", formats=("csv",))
    assert paths["csv"].name == "img.calcifications.csv"
    assert paths["clusters.csv"].name == "img.clusters.csv"
    header = paths["csv"].read_text().splitlines()[0].split(",")
    assert header == calc_columns(ndim)
    assert paths["clusters.csv"].read_text().splitlines()[0].split(",") == cluster_columns(ndim)
    # exact float text: the repr of the float
    first = paths["csv"].read_text().splitlines()[1].split(",")
    i = calc_columns(ndim).index("row")
    assert float(first[i]) == det.calcifications["row"].iloc[0]
    back = read_detections(paths["csv"])
    assert_same_detections(det, back, ndim, atol=0)  # exact
    # reading from the cluster table gives the same result
    back2 = read_detections(paths["clusters.csv"])
    assert_same_detections(det, back2, ndim, atol=0)
    # spacing recovered from mm/px ratios without the JSON
    np.testing.assert_allclose(back.spacing_mm, det.spacing_mm, rtol=1e-9)
    assert len(back.image_shape) == ndim
    # unclustered calcification has cluster_id -1
    assert (back.calcifications["cluster_id"] == -1).sum() == 1


def test_csv_extra_review_columns_after_contract(tmp_path):
    det = make_detections(2, extras=True)
    paths = write_outputs(det, tmp_path, "rev")
    header = paths["csv"].read_text().splitlines()[0].split(",")
    assert header == calc_columns(2) + ["morphology", "annotator"]
    back = read_detections(paths["csv"])
    assert list(back.calcifications["morphology"].fillna("")) == \
        list(det.calcifications["morphology"])


def test_csv_nan_cluster_becomes_minus_one(tmp_path):
    det = make_detections(2)
    det.calcifications["cluster_id"] = det.calcifications["cluster_id"].astype(float)
    det.calcifications.loc[6, "cluster_id"] = np.nan
    paths = write_outputs(det, tmp_path, "nan")
    back = read_detections(paths["csv"])
    assert back.calcifications["cluster_id"].tolist()[-1] == -1
    assert back.calcifications["cluster_id"].dtype.kind == "i"


def test_empty_detections_round_trip(tmp_path):
    det = Detections.empty((64, 64), (0.1, 0.1), metadata={"laterality": "R"})
    paths = write_outputs(det, tmp_path, "empty", formats=["json"])
    assert paths["csv"].read_text().strip() == ",".join(calc_columns(2))
    for p in (paths["csv"], paths["json"]):
        back = read_detections(p)
        assert len(back.calcifications) == 0 and len(back.clusters) == 0
        assert list(back.calcifications.columns) == calc_columns(2)


@pytest.mark.parametrize("ndim", [2, 3])
def test_json_content_and_round_trip(tmp_path, ndim):
    det = make_detections(ndim, extras=True)
    paths = write_outputs(det, tmp_path, "img", formats="csv,json")
    assert paths["json"].name == "img.detections.json"
    doc = json.loads(paths["json"].read_text())
    assert doc["format"] == "napari-calc detections" and doc["version"] == 1
    assert doc["software"]["name"] == "napari-calc" and doc["software"]["version"]
    img = doc["image"]
    assert img["units"] == "mm" and img["laterality"] == "L" and img["view"] == "CC"
    assert img["spacing_mm"] == list(det.spacing_mm) and img["shape"] == list(det.image_shape)
    assert img["sop_instance_uid"] == det.metadata["sop_instance_uid"]
    assert img["patient_id"] == det.metadata["patient_id"]  # biopsy export keeps ids
    assert doc["parameters"] == det.params
    assert len(doc["calcifications"]) == 7 and len(doc["clusters"]) == 2
    c1 = doc["clusters"][0]
    members = det.calcifications[det.calcifications.cluster_id == 1]
    assert c1["calc_ids"] == members.calc_id.tolist()
    assert c1["n_calcifications"] == 4
    assert c1["centroid_mm"]["y"] == det.clusters["y_mm"].iloc[0]
    bb = c1["bounding_box"]
    r = members.diameter_mm / 2
    assert bb["y_min_mm"] == pytest.approx((members.y_mm - r).min())
    assert bb["x_max_mm"] == pytest.approx((members.x_mm + r).max())
    assert bb["row_min"] <= members.row.min() and bb["col_max"] >= members.col.max()
    assert c1["laterality"] == "L" and c1["view"] == "CC"
    if ndim == 3:
        assert "z" in c1["centroid_mm"] and bb["slice_min"] == members.slice.min()
        assert "z_mm" in doc["calcifications"][0] and "slice" in doc["calcifications"][0]
    back = read_detections(paths["json"])
    assert_same_detections(det, back, ndim, atol=0)
    assert back.image_shape == det.image_shape and back.spacing_mm == det.spacing_mm
    assert back.params == det.params
    assert back.metadata["laterality"] == "L"
    # CSV next to the JSON takes shape/metadata from it
    back_csv = read_detections(paths["csv"])
    assert back_csv.image_shape == det.image_shape
    assert back_csv.metadata["sop_instance_uid"] == det.metadata["sop_instance_uid"]


def test_unknown_format_lists_valid_ones(tmp_path):
    det = make_detections(2)
    with pytest.raises(InvalidParameterError) as ei:
        write_outputs(det, tmp_path, "x", formats=("csv", "xlsx"))
    for f in FORMATS:
        assert f in str(ei.value)
    assert not list(tmp_path.iterdir())  # nothing written


def test_never_overwrites_input(tmp_path):
    src = tmp_path / "img.calcifications.csv"
    src.write_bytes(b"precious image bytes")
    md = dicom_metadata()
    md["source_path"] = str(src)
    det = make_detections(2, metadata=md)
    with pytest.raises(InvalidParameterError, match="input image"):
        write_outputs(det, tmp_path, "img", formats=("json",))
    assert src.read_bytes() == b"precious image bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.calcifications.csv"]


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    """A writer failing half-way leaves the previous file intact and no temp file."""
    import pydicom

    det = make_detections(2)
    paths = write_outputs(det, tmp_path, "a", formats=("sr.dcm",))
    before = paths["sr.dcm"].read_bytes()

    def half_then_fail(self, f, *a, **k):
        f.write(b"DICM partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(pydicom.Dataset, "save_as", half_then_fail)
    det.calcifications.loc[0, "row"] += 1.0  # new content that never lands
    with pytest.raises(NapariCalcError, match="disk full") as ei:
        write_outputs(det, tmp_path, "a", formats=("sr.dcm",))
    assert "a.sr.dcm" in str(ei.value)
    assert paths["sr.dcm"].read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_unwritable_destination_is_one_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(NapariCalcError, match="cannot write") as ei:
        write_outputs(make_detections(2), blocker, "img")
    assert "img.calcifications.csv" in str(ei.value)


def test_read_rejects_foreign_files(tmp_path):
    p = tmp_path / "other.json"
    p.write_text('{"hello": 1}')
    with pytest.raises(NapariCalcError, match="other.json"):
        read_detections(p)
    q = tmp_path / "points.csv"
    pd.DataFrame({"a": [1]}).to_csv(q)
    with pytest.raises(NapariCalcError, match="points.csv"):
        read_detections(q)
    with pytest.raises(NapariCalcError, match="missing"):
        read_detections(tmp_path / "missing.calcifications.csv")


def test_missing_contract_column_is_clear_error(tmp_path):
    det = make_detections(2)
    det.calcifications = det.calcifications.drop(columns=["cnr"])
    with pytest.raises(InvalidParameterError, match="cnr"):
        write_outputs(det, tmp_path, "bad")


def test_csv_as_a_spreadsheet_saves_it(tmp_path):
    """Excel capitalises statuses and leaves ",,,," rows; an annotator types
    a decimal comma or clears a cell. Odd but valid tables read; bad values
    are one line naming the file, the column, the row and the value (they
    crashed the Review panel, became NaN silently, or moved a point to row 0)."""
    from napari_calc.core.export import read_detections, write_outputs
    from napari_calc.core.export._common import ExportError

    det = make_detections(2)
    write_outputs(det, tmp_path, "img", formats=["csv"])
    p = tmp_path / "img.calcifications.csv"
    base = p.read_text().splitlines()
    head = base[0].split(",")

    def edit(col, row, value):
        lines = [ln.split(",") for ln in base]
        lines[row + 1][head.index(col)] = value
        return "\n".join(",".join(ln) for ln in lines) + "\n"

    p.write_text(edit("status", 0, " Accepted") + ",,,,,,,,,,\n")
    got = read_detections(p).calcifications
    assert got.status.iloc[0] == "accepted" and len(got) == len(det.calcifications)
    for col, row, value, message in [
        ("score", 2, '"0,93"', r"column score is not numeric: '0,93' in data row 3 \(a decimal comma\? use a point\)"),
        ("row", 1, "", r"column row is empty in data row 2"),
        ("y_mm", 0, "abc", r"column y_mm is not numeric: 'abc' in data row 1"),
        ("calc_id", 3, "1", r"calc_id 1 appears more than once \(data rows 1 and 4\)"),
        ("status", 4, "maybe", r"status 'maybe' in data row 5 is not one of candidate, accepted, rejected, added"),
    ]:
        p.write_text(edit(col, row, value))
        with pytest.raises(ExportError, match=r"img\.calcifications\.csv: " + message):
            read_detections(p)


@pytest.mark.parametrize("ndim", [2, 3])
def test_csv_saved_with_semicolons_and_decimal_commas_reads_the_same(tmp_path, ndim):
    """Where the comma is the decimal separator, a spreadsheet saves "CSV"
    with semicolons and decimal commas (Excel's "CSV UTF-8" with a byte
    order mark, Windows line ends). An annotator who opened our tables,
    reviewed and saved them gets the same detections back, not "lacks the
    column(s) calc_id, row, ..."."""
    det = make_detections(ndim)
    paths = write_outputs(det, tmp_path, "img", formats=("csv",))
    for key in ("csv", "clusters.csv"):
        t = pd.read_csv(paths[key])
        text = t.to_csv(sep=";", decimal=",", index=False, lineterminator="\r\n")
        assert ";" in text.splitlines()[0] and "," in text  # decimal commas present
        paths[key].write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    for key in ("csv", "clusters.csv"):
        assert_same_detections(det, read_detections(paths[key]), ndim, atol=0)


def test_empty_or_folder_csv_is_one_clear_line(tmp_path):
    from napari_calc.core.export._common import ExportError

    p = tmp_path / "img.calcifications.csv"
    p.write_text("")
    with pytest.raises(ExportError, match=r"img\.calcifications\.csv: file is empty$"):
        read_detections(p)
