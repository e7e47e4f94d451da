"""Helpers for the batch tests (small phantom TIFFs, output comparison), and
the tests of output-stem disambiguation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_calc.core.batch import InputItem, assign_stems

SPACING_MM = 0.1
_CACHE: dict[int, np.ndarray] = {}


def phantom_pixels(seed: int) -> np.ndarray:
    """A small synthetic mammogram (60 x 48 mm at 0.1 mm, one cluster)."""
    if seed not in _CACHE:
        from napari_calc.core.phantom import make_phantom

        _CACHE[seed] = make_phantom(seed, size_mm=(60.0, 48.0), n_clusters=1, n_singles=1).image.pixels
    return _CACHE[seed]


def write_tiff(path, seed: int) -> Path:
    """Write phantom ``seed`` as a TIFF with resolution tags (0.1 mm)."""
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, phantom_pixels(seed), resolution=(10.0 / SPACING_MM, 10.0 / SPACING_MM),
                     resolutionunit="CENTIMETER")
    return path


def make_dataset(root, n: int, *, first_seed: int = 0) -> list[Path]:
    """``n`` phantom TIFFs ``img<i>.tif`` in ``root``."""
    return [write_tiff(Path(root) / f"img{i}.tif", first_seed + i) for i in range(n)]


def data_files(folder) -> dict[str, bytes]:
    """Every output of a run (CSV, JSON, markers) except the run manifest."""
    out = {}
    for p in sorted(Path(folder).iterdir()):
        if p.is_file() and p.name != "napari-calc-run.json" and not p.name.startswith("."):
            out[p.name] = p.read_bytes()
    return out


def csv_files(folder) -> dict[str, bytes]:
    return {k: v for k, v in data_files(folder).items() if k.endswith(".csv")}


# ------------------------------------------------------------------ stems

def _items(root, rels):
    root = os.path.abspath(root)
    return [InputItem(path=os.path.join(root, r), root=root) for r in rels]


def test_stems_unique_names_are_kept(tmp_path):
    items = assign_stems(_items(tmp_path, ["a.dcm", "b.ome.tif", "c/d.tiff", "e"]))
    assert [it.stem for it in items] == ["a", "b", "d", "e"]


def test_stems_strip_every_image_extension_in_any_case(tmp_path):
    """``scan.IMA`` and ``scan.dic`` (Siemens and older DICOM exports) gave
    ``scan.IMA.calcifications.csv``: only some endings were stripped."""
    items = assign_stems(_items(tmp_path, ["scan1.IMA", "scan2.dic", "b.DICOM", "c.Tiff", "d.ome.TIFF",
                                           "e.dcm", "f"]))
    assert [it.stem for it in items] == ["scan1", "scan2", "b", "c", "d", "e", "f"]


def test_stems_clashes_use_relative_path(tmp_path):
    items = assign_stems(_items(tmp_path, ["left/a.dcm", "right/a.dcm", "x/y/a.tif", "b.tif"]))
    assert [it.stem for it in items] == ["left__a", "right__a", "x__y__a", "b"]


def test_stems_case_insensitive_and_deterministic(tmp_path):
    rels = ["p/IMG.dcm", "q/img.tif"]
    a = [it.stem for it in assign_stems(_items(tmp_path, rels))]
    b = [it.stem for it in assign_stems(_items(tmp_path, list(reversed(rels))))]
    assert a == ["p__IMG", "q__img"]
    assert sorted(a) == sorted(b)


def test_stems_same_relative_path_under_two_roots(tmp_path):
    r1, r2 = tmp_path / "site1", tmp_path / "site2"
    items = [InputItem(path=str(r1 / "cc" / "a.dcm"), root=str(r1)),
             InputItem(path=str(r2 / "cc" / "a.dcm"), root=str(r2))]
    assign_stems(items)
    assert [it.stem for it in items] == ["site1__cc__a", "site2__cc__a"]


def test_stems_same_folder_same_stem_get_numbers(tmp_path):
    # "a" (DICOM without extension) and "a.dcm" in one folder
    items = assign_stems(_items(tmp_path, ["a.dcm", "a"]))
    stems = [it.stem for it in items]
    assert len({s.casefold() for s in stems}) == 2
    assert sorted(stems) == ["a", "a__2"]
    # numbering follows the sorted absolute paths: ".../a" < ".../a.dcm"
    assert dict(zip([os.path.basename(it.path) for it in items], stems)) == {"a": "a", "a.dcm": "a__2"}



def test_temporaries_of_temporaries_are_cleaned(tmp_path):
    """An interrupted atomic write inside another's temporary name left
    "..a.sr.dcm.12.partial.tmp.x.tmp", which every re-run kept."""
    from napari_calc.core.batch import _clean_temporaries

    names = [".a.sr.dcm.12.partial.tmp", "..a.sr.dcm.12.partial.tmp.bb6l1xfo.tmp", ".ab.csv.1.tmp", "a.sr.dcm"]
    for n in names:
        (tmp_path / n).write_text("x")
    _clean_temporaries(tmp_path, ["a"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ab.csv.1.tmp", "a.sr.dcm"]  # another stem's stays
