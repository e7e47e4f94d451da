"""The npe2 manifest: valid, registered, and every contribution importable."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

npe2 = pytest.importorskip("npe2")

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "napari_calc" / "napari.yaml"


def _resolve(python_name: str):
    mod, _, attr = python_name.partition(":")
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def test_manifest_file_is_valid_and_complete():
    pm = npe2.PluginManifest.from_file(MANIFEST)
    assert pm.name == "napari-calc"
    assert pm.display_name == "napari-calc"
    c = pm.contributions
    assert sorted(w.display_name for w in c.widgets) == ["Detect calcifications", "Review calcifications",
                                                         "Review worklist"]
    assert [s.key for s in c.sample_data] == ["sample-mammogram"]
    assert c.sample_data[0].display_name == "Synthetic mammogram with calcifications"
    patterns = {p for r in c.readers for p in r.filename_patterns}
    assert {"*.dcm", "*.tif", "*.tiff", "*"} <= patterns
    assert {"*.calcifications.csv", "*.json", "*.sr.dcm"} <= patterns
    assert c.writers, "no writers contributed"


def test_every_command_imports():
    pm = npe2.PluginManifest.from_file(MANIFEST)
    for cmd in pm.contributions.commands:
        assert callable(_resolve(cmd.python_name)), cmd.python_name


def test_npe2_validate_cli_on_installed_plugin():
    exe = shutil.which("npe2") or str(Path(sys.executable).with_name("npe2"))
    if not os.path.exists(exe):
        pytest.skip("npe2 command not found")
    r = subprocess.run([exe, "validate", "napari-calc"], capture_output=True, text=True, timeout=120)
    if "not found" in (r.stdout + r.stderr).lower() and r.returncode != 0:
        pytest.skip("napari-calc is not installed (pip install -e .)")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout


def test_image_reader_accepts_images_by_content_and_declines_others(tmp_path):
    import tifffile

    from napari_calc.plugin.reader import get_reader

    tif = tmp_path / "mammo.tif"
    tifffile.imwrite(tif, np.arange(64 * 48, dtype=np.uint16).reshape(64, 48),
                     resolution=(100.0, 100.0), resolutionunit="CENTIMETER")
    noext = tmp_path / "IMG0001"  # a TIFF without extension: recognised by content
    noext.write_bytes(tif.read_bytes())
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image")
    csv = tmp_path / "x.calcifications.csv"
    csv.write_text("calc_id,row,col\n")
    assert get_reader(str(txt)) is None
    assert get_reader(str(csv)) is None
    assert get_reader(str(tmp_path / "missing.dcm")) is None
    for p in (tif, noext):
        reader = get_reader(str(p))
        assert callable(reader)
        ((data, kw, kind),) = reader(str(p))
        assert kind == "image" and data.shape == (64, 48)
        assert kw["scale"] == pytest.approx((0.1, 0.1))
        assert kw["metadata"]["napari_calc"]["spacing_mm"] == pytest.approx((0.1, 0.1))


def test_reader_leaves_spacing_unknown_when_file_has_none(tmp_path):
    import tifffile

    from napari_calc.plugin.reader import get_reader

    p = tmp_path / "bare.tif"
    tifffile.imwrite(p, np.ones((40, 30), dtype=np.uint16))
    ((data, kw, kind),) = get_reader(str(p))(str(p))
    assert "scale" not in kw  # never a silent default
    assert kw["metadata"]["napari_calc"]["spacing_mm"] is None


def test_sample_data_is_a_scaled_mammogram_with_truth():
    from napari_calc.plugin.sample_data import make_sample_data

    ((data, kw, kind),) = make_sample_data()
    assert kind == "image" and data.ndim == 2 and data.dtype == np.uint16
    assert kw["scale"] == pytest.approx((0.1, 0.1)) and kw["units"] == ("mm", "mm")
    assert len(kw["metadata"]["napari_calc"]["truth"]["calcifications"]) > 0
