"""``napari-calc detect``: the command line contract (INTERFACE.md, issues 2 and 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_calc.cli import main
from napari_calc.cli.detect import parse_formats, parse_param, parse_spacing
from napari_calc.core.columns import calc_columns
from napari_calc.core.errors import NapariCalcError

from test_batch_support import make_dataset, write_tiff

REPO = Path(__file__).resolve().parents[1]


def _bad_inputs(folder: Path) -> dict[str, Path]:
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.txt"
    text.write_text("not an image\n")
    rgb = folder / "colour.tif"
    tifffile.imwrite(rgb, np.zeros((40, 50, 3), np.uint8), photometric="rgb",
                     resolution=(100.0, 100.0), resolutionunit="CENTIMETER")
    tiny = folder / "tiny.tif"
    tifffile.imwrite(tiny, np.zeros((1, 1), np.uint16), resolution=(100.0, 100.0),
                     resolutionunit="CENTIMETER")
    return {"missing": folder / "missing.dcm", "text": text, "rgb": rgb, "tiny": tiny}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_issue2_bad_inputs_one_line_each_good_ones_processed(tmp_path, capsys, workers):
    good = make_dataset(tmp_path / "good", 2)
    bad = _bad_inputs(tmp_path / "bad")
    out = tmp_path / "out"
    args = [str(good[0]), str(bad["missing"]), str(bad["text"]), str(bad["rgb"]), str(bad["tiny"]),
            str(good[1])]
    rc = main(["detect", *args, "--out", str(out), "--workers", workers, "--no-progress"])
    cap = capsys.readouterr()
    assert rc != 0
    lines = cap.err.splitlines()
    assert len(lines) == 4, cap.err
    expect = {"missing": "not found", "text": "not recognised", "rgb": "RGB", "tiny": "1x1"}
    for key, path in bad.items():
        (line,) = [ln for ln in lines if str(path) in ln]
        assert line == line.strip() and "Traceback" not in line
        reason = line.split(f"{path}: ", 1)[1]
        assert expect[key].lower() in reason.lower(), line
        assert not list(out.glob(f"{path.stem}.*")), f"something written for {path.name}"
    for g in good:
        calcs = pd.read_csv(out / f"{g.stem}.calcifications.csv")
        assert list(calcs.columns) == calc_columns(2)
        assert (out / f"{g.stem}.clusters.csv").is_file()
    assert "2 done" in cap.out and "4 failed" in cap.out


def test_outputs_and_formats(tmp_path):
    (img,) = make_dataset(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(["detect", str(img), "--out", str(out), "--formats", "json,mrk.json", "--workers", "1"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"img0.calcifications.csv", "img0.clusters.csv", "img0.detections.json", "img0.mrk.json",
            "img0.done.json", "napari-calc-run.json"} <= names
    doc = json.loads((out / "img0.detections.json").read_text())
    assert "seconds" not in doc.get("parameters", {})  # timings stay out of the data outputs


def test_spacing_override_changes_outputs_and_is_recorded(tmp_path):
    (img,) = make_dataset(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(["detect", str(img), "--out", str(out), "--workers", "1"]) == 0
    a = pd.read_csv(out / "img0.calcifications.csv")
    assert main(["detect", str(img), "--out", str(out), "--workers", "1", "--spacing", "0.05"]) == 0
    b = pd.read_csv(out / "img0.calcifications.csv")
    m = json.loads((out / "napari-calc-run.json").read_text())
    assert m["parameters"]["spacing_mm"] == 0.05 and m["inputs"][0]["status"] == "done"
    assert len(b) and np.allclose(b["y_mm"], b["row"] * 0.05)
    assert np.allclose(a["y_mm"], a["row"] * 0.1)


def test_default_out_dir_is_napari_calc_out(tmp_path, monkeypatch):
    (img,) = make_dataset(tmp_path / "in", 1)
    monkeypatch.chdir(tmp_path)
    assert main(["detect", str(img), "--workers", "1"]) == 0
    assert (tmp_path / "napari-calc-out" / "img0.calcifications.csv").is_file()


def test_parsers():
    assert parse_formats("json, mrk.json,json") == ("csv", "json", "mrk.json")
    with pytest.raises(NapariCalcError):
        parse_formats("png")
    assert parse_spacing("0.07") == 0.07 and parse_spacing("0.07,0.05") == (0.07, 0.05)
    for bad in ("abc", "-1", "0", "inf", "nan", "0.07,inf"):
        with pytest.raises(NapariCalcError):
            parse_spacing(bad)
    assert parse_param("threshold=4.5") == ("threshold", 4.5)
    assert parse_param("use-mask=false") == ("use_mask", False)
    with pytest.raises(NapariCalcError):
        parse_param("threshold")


def test_a_parameter_given_twice_is_refused(tmp_path, capsys):
    """``--param threshold=4 --param threshold=5`` ran silently with 5."""
    good = write_tiff(tmp_path / "in" / "a.tif", 0)
    for twice in (["threshold=4", "threshold=5"], ["use-mask=false", "use_mask=true"]):
        args = [a for t in twice for a in ("--param", t)]
        rc = main(["detect", str(good), "--out", str(tmp_path / "o"), "--workers", "1", *args])
        o, err = capsys.readouterr()
        name = twice[0].split("=")[0].replace("-", "_")
        assert rc != 0 and not o and err.splitlines() == [
            f"napari-calc: --param {name} is given twice ({twice[0]!r} and {twice[1]!r}); "
            "give each parameter once"]
        assert not (tmp_path / "o").exists()
    from napari_calc.cli.detect import parse_params

    assert parse_params(["threshold=4", "use-mask=false"]) == {"threshold": 4, "use_mask": False}


@pytest.mark.parametrize("argv, expected", [
    (["phantom", "OUT", "--spacing", "0"],
     "napari-calc phantom: argument --spacing: must be > 0: '0' (see 'napari-calc phantom --help')"),
    (["detect"], "napari-calc detect: the following arguments are required: INPUT "
                 "(see 'napari-calc detect --help')"),
    (["detect", "x.tif", "--workers", "two"],
     "napari-calc detect: argument --workers: invalid int value: 'two' (see 'napari-calc detect --help')"),
    (["frobnicate"], "napari-calc: argument COMMAND: invalid choice: 'frobnicate' (choose from "
                     "'detect', 'demo', 'view', 'review', 'phantom', 'evaluate') (see 'napari-calc --help')"),
])
def test_usage_errors_are_one_line(argv, expected, capsys):
    """A mistyped option is one line, like every other error (argparse adds its usage block)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    o, err = capsys.readouterr()
    assert exc.value.code == 2 and not o and err.splitlines() == [expected]


def test_command_line_exit_status_and_no_dask_import(tmp_path):
    """A fresh interpreter: one error line, exit 1, the good input done, dask never imported."""
    good = write_tiff(tmp_path / "in" / "a.tif", 0)
    code = ("import sys\n"
            "from napari_calc.cli import main\n"
            f"rc = main(['detect', {str(good)!r}, {str(tmp_path / 'nope.tif')!r}, '--out', "
            f"{str(tmp_path / 'o')!r}, '--workers', '1'])\n"
            "assert 'distributed' not in sys.modules and 'dask' not in sys.modules, 'dask imported'\n"
            "sys.exit(rc)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [f"napari-calc: {tmp_path / 'nope.tif'}: file not found"]
    assert (tmp_path / "o" / "a.calcifications.csv").is_file()
    assert "1 done, 1 failed" in r.stdout


def test_implausible_spacing_message_is_plain(tmp_path, capsys):
    inp = write_tiff(tmp_path / "img.tif", 0)
    assert main(["detect", str(inp), "--out", str(tmp_path / "o"), "--spacing", "1e-9"]) != 0
    (line,) = capsys.readouterr().err.splitlines()
    assert "img.tif: in-plane spacing 1e-09 x 1e-09 mm is not a mammogram's" in line, line


def test_a_missing_folder_is_called_a_folder(tmp_path, capsys):
    """``detect nothere/`` said "file not found" for what is clearly meant as a folder."""
    good = write_tiff(tmp_path / "in" / "a.tif", 0)
    gone = str(tmp_path / "nothere") + os.sep
    rc = main(["detect", str(good), gone, "--out", str(tmp_path / "o"), "--workers", "1",
               "--no-progress"])
    o, err = capsys.readouterr()
    assert rc != 0 and err.splitlines() == [f"napari-calc: {gone}: folder not found"]
    assert "1 done, 1 failed" in o
    from napari_calc.core.errors import UnreadableImageError
    from napari_calc.core.read import read_image

    with pytest.raises(UnreadableImageError, match="nothere/: folder not found$"):
        read_image(gone)
    with pytest.raises(UnreadableImageError, match="nothere: file not found$"):
        read_image(gone.rstrip(os.sep))
