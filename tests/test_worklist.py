"""The review worklist of a batch folder (core, no Qt): which images, in
which order, how far each review has got, and the reviewed tables written
back over the outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_calc.cli import main
from napari_calc.core.batch import run_batch
from napari_calc.core.errors import NapariCalcError
from napari_calc.core.export import read_detections
from napari_calc.core.review import ReviewSession
from napari_calc.core.worklist import read_worklist

from test_batch_support import write_tiff


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A finished batch of three phantoms, one from a sub-folder, named so
    that name order and natural order differ (img10 after img2)."""
    root = tmp_path_factory.mktemp("worklist")
    scans = root / "scans"
    for name, seed in (("img10.tif", 0), ("img2.tif", 1), ("sub/img3.tif", 2)):
        write_tiff(scans / name, seed)
    out = root / "out"
    assert run_batch([scans], out, workers=1, formats=("csv", "json", "mrk.json")).exit_code == 0
    return scans, out


@pytest.fixture
def folder(batch, tmp_path):
    """A private copy of the batch folder (the inputs stay where they are)."""
    out = tmp_path / "out"
    shutil.copytree(batch[1], out)
    return out


def _session(wl, item):
    det = read_detections(item.detections)
    return ReviewSession.open_or_create(det, wl.sidecar(item), fsync=False)


def test_items_in_natural_order_with_their_files(folder, batch):
    wl = read_worklist(folder)
    assert [it.stem for it in wl.items] == ["img2", "img3", "img10"]
    assert [it.name for it in wl.items] == ["img2.tif", "img3.tif", "img10.tif"]
    assert wl.items[0].image == str(batch[0] / "img2.tif")
    assert wl.items[1].image == str(batch[0] / "sub" / "img3.tif")
    assert wl.items[2].detections == folder / "img10.detections.json"  # the JSON when written
    for it in wl.items:
        calcs = pd.read_csv(it.outputs["csv"])
        assert it.n_candidates == len(calcs) > 0
        assert it.n_likely == int((calcs["score"] >= 0.5).sum())
    assert wl.problems == []
    # the autosaves live in the batch folder, one per image
    assert len({wl.sidecar(it) for it in wl.items}) == 3
    assert all(wl.sidecar(it).parent == folder for it in wl.items)
    assert wl.find("img10") == 2 and wl.find(str(batch[0] / "sub" / "img3.tif")) == 1
    assert wl.find("nope") is None


def test_a_folder_of_batch_folders(folder, tmp_path):
    shutil.copytree(folder, tmp_path / "all" / "run2")
    shutil.move(folder, tmp_path / "all" / "run1")
    wl = read_worklist(tmp_path / "all")
    assert [it.stem for it in wl.items] == ["run1/img2", "run1/img3", "run1/img10", "run2/img2",
                                            "run2/img3", "run2/img10"]
    assert wl.items[4].outputs["csv"] == tmp_path / "all" / "run2" / "img3.calcifications.csv"
    assert wl.items[4].detections == tmp_path / "all" / "run2" / "img3.detections.json"


def test_csv_only_batch_opens_the_table(tmp_path):
    write_tiff(tmp_path / "scans" / "a.tif", 3)
    run_batch([tmp_path / "scans"], tmp_path / "out", workers=1)
    (it,) = read_worklist(tmp_path / "out").items
    assert it.detections == tmp_path / "out" / "a.calcifications.csv"


def test_bad_folders_are_one_line(tmp_path):
    with pytest.raises(NapariCalcError, match=r"nothere: folder not found$"):
        read_worklist(tmp_path / "nothere")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(NapariCalcError, match="f.txt: not a folder"):
        read_worklist(tmp_path / "f.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NapariCalcError, match="no image finished by napari-calc detect here; run: napari-calc detect"):
        read_worklist(tmp_path / "empty")


def test_unusable_markers_are_listed_and_the_rest_kept(folder):
    (folder / "img2.done.json").write_text("{not json")
    (folder / "img10.calcifications.csv").unlink()
    wl = read_worklist(folder)
    assert [it.stem for it in wl.items] == ["img3"]
    assert len(wl.problems) == 2
    assert any("img2.done.json: cannot be used (not valid JSON: damaged)" in p for p in wl.problems)
    assert any("img10.calcifications.csv is missing" in p for p in wl.problems)
    (folder / "img3.done.json").unlink()
    # the line names a marker and why, not only how many
    with pytest.raises(NapariCalcError, match=r"no image finished .*\(but 2 unusable markers, e\.g\. "
                                              r".*img(2|10)\.(done\.json|calcifications\.csv).*\)"):
        read_worklist(folder)


def test_progress_follows_the_review(folder):
    wl = read_worklist(folder)
    it = wl.items[0]
    p = wl.progress(it)
    assert p.state == "to review" and p.to_review == it.n_likely
    s = _session(wl, it)
    ids = s.visible_ids()
    assert len(ids) > 3
    s.accept(ids[:2])
    s.reject(ids[2:3])
    p = wl.progress(it)  # read from the autosave while the session is open
    assert (p.state, p.accepted, p.rejected, p.to_review) == ("in progress", 2, 1, len(ids) - 3)
    assert wl.progress(it, s) == p  # the same from the live session
    # reading the progress left the session writing its autosave
    s.reject(ids[3:])
    assert not s.closed
    p = wl.progress(it)
    assert (p.state, p.to_review, p.rejected) == ("reviewed", 0, len(ids) - 2)
    s.close()


def test_progress_of_an_unreadable_autosave(folder):
    wl = read_worklist(folder)
    wl.sidecar(wl.items[1]).write_text("garbage\n")
    p = wl.progress(wl.items[1])
    assert p.state == "cannot open" and "autosave unreadable" in p.text


def test_next_index(folder):
    wl = read_worklist(folder)
    assert wl.next_index(None) == 0 and wl.next_index(0) == 1 and wl.next_index(2) is None
    assert wl.next_index(None, direction=-1) == 2 and wl.next_index(0, direction=-1) is None
    s = _session(wl, wl.items[1])
    s.reject(s.visible_ids())
    s.close()
    assert wl.next_index(0, to_review_only=True) == 2  # img3 is reviewed: skipped
    assert wl.next_index(None, to_review_only=True) == 0


def test_save_reviewed_rewrites_tables_and_json_only(folder):
    wl = read_worklist(folder)
    it = wl.items[1]  # from a sub-folder
    mrk_before = it.outputs["mrk.json"].read_bytes()
    s = _session(wl, it)
    ids = s.visible_ids()
    s.accept(ids[:1])
    s.reject(ids[1:2])
    s.set_labels(ids[:1], morphology="fine pleomorphic")
    written = wl.save_reviewed(it, s.detections)
    assert sorted(p.name for p in written) == ["img3.calcifications.csv", "img3.clusters.csv",
                                                "img3.detections.json"]
    assert all(p.parent == folder for p in written)
    calcs = pd.read_csv(it.outputs["csv"], keep_default_na=False)
    st = dict(zip(calcs["calc_id"], calcs["status"]))
    assert st[ids[0]] == "accepted" and st[ids[1]] == "rejected"
    assert dict(zip(calcs["calc_id"], calcs["morphology"]))[ids[0]] == "fine pleomorphic"
    back = read_detections(it.detections).calcifications
    assert dict(zip(back["calc_id"], back["status"]))[ids[0]] == "accepted"
    assert it.outputs["mrk.json"].read_bytes() == mrk_before  # left as the detector wrote it
    # the review reopens from the folder as it was left: the table written
    # after the autosave holds the same review, so the autosave is used
    s.close()
    again = _session(wl, it)
    assert again.newer_file is None and again.backup is None
    assert (again.detections.calcifications["status"] != "candidate").sum() == 2
    again.close()


def test_stale_tables(folder):
    wl = read_worklist(folder)
    assert wl.stale_tables() == []
    s = _session(wl, wl.items[0])
    s.accept(s.visible_ids()[:1])
    s.close()
    assert wl.stale_tables() == [wl.items[0]]
    wl.save_reviewed(wl.items[0], ReviewSession.restore(wl.sidecar(wl.items[0]), read_only=True).detections)
    assert wl.stale_tables() == []


def test_read_only_restore_writes_nothing(folder):
    wl = read_worklist(folder)
    s = _session(wl, wl.items[0])
    s.accept(s.visible_ids()[:1])
    path = wl.sidecar(wl.items[0])
    before = path.read_bytes()
    ro = ReviewSession.restore(path, read_only=True)
    ro.reject(ro.visible_ids()[1:2])  # not saved anywhere
    assert ro.sidecar is None and path.read_bytes() == before
    s.accept(s.visible_ids()[2:3])  # the open session still saves
    assert path.read_bytes() != before
    s.close()


def test_cli_review_bad_folder_is_one_line(tmp_path, capsys):
    assert main(["review", str(tmp_path / "nothere")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"napari-calc: {tmp_path / 'nothere'}: folder not found"]


def test_cli_review_images_that_is_a_file_is_one_line(folder, tmp_path, capsys):
    """It said "afile: images folder not found" of a file that is there."""
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["review", str(folder), "--images", str(afile)]) == 1
    o, err = capsys.readouterr()
    assert not o and err.splitlines() == [
        f"napari-calc: {afile}: not a folder: give --images the folder the images are in now"]


def test_cli_review_unknown_start_is_one_line(folder, capsys):
    assert main(["review", str(folder), "--start", "img99"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no image 'img99' in the worklist (3 images)" in err[0]


def test_batch_rerun_keeps_a_reviewed_table(batch, folder):
    """A re-run with other parameters over a reviewed folder keeps the
    reviewed table as .bak (its digest no longer matches the marker)."""
    wl = read_worklist(folder)
    it = wl.items[0]
    s = _session(wl, it)
    s.accept(s.visible_ids()[:1])
    wl.save_reviewed(it, s.detections)
    s.close()
    reviewed = it.outputs["csv"].read_bytes()
    autosave = wl.sidecar(it).read_bytes()
    res = run_batch([Path(it.image)], folder, workers=1, formats=("csv", "json", "mrk.json"),
                    params={"threshold": 3.5})
    assert res.exit_code == 0
    bak = folder / "img2.calcifications.csv.bak"
    assert bak.read_bytes() == reviewed
    assert json.loads(it.outputs["json"].read_text())["format"] == "napari-calc detections"
    assert np.all(pd.read_csv(it.outputs["csv"])["status"] == "candidate")
    assert wl.sidecar(it).read_bytes() == autosave  # the review itself stays, to carry over


def test_images_moved_to_another_place(folder, batch, tmp_path):
    """Results reviewed on another machine: the images are found under
    --images by the tail of their recorded path; the reviews stay keyed on
    the recorded path."""
    elsewhere = tmp_path / "mnt" / "scans"
    shutil.copytree(batch[0], elsewhere)
    wl = read_worklist(folder)
    fake = [type(it)(stem=it.stem, image="/nonexistent/archive/scans/" + Path(it.image).relative_to(batch[0]).as_posix(),
                     detections=it.detections, outputs=it.outputs) for it in wl.items]
    moved = type(wl)(folder, fake, images_dir=tmp_path / "mnt")
    assert moved.image_path(fake[1]) == str(elsewhere / "sub" / "img3.tif")  # scans/sub/img3.tif
    assert moved.image_path(fake[0]) == str(elsewhere / "img2.tif")
    assert type(wl)(folder, fake).image_path(fake[0]) is None  # without --images
    assert moved.sidecar(fake[0]) == type(wl)(folder, fake).sidecar(fake[0])
    assert wl.image_path(wl.items[0]) == wl.items[0].image  # still where the batch read it
    with pytest.raises(NapariCalcError, match="nothere: images folder not found"):
        read_worklist(folder, tmp_path / "nothere")
    assert read_worklist(folder, elsewhere).images_dir == elsewhere


def test_a_failed_rerun_keeps_the_reviewed_image_on_the_list(tmp_path, monkeypatch):
    """The marker of the earlier run went first; when the re-run failed (the
    scan replaced by a damaged copy) the earlier, reviewed outputs stayed but
    the image dropped off ``napari-calc review``'s list."""
    scans, out = tmp_path / "scans", tmp_path / "out"
    write_tiff(scans / "a.tif", 0)
    write_tiff(scans / "b.tif", 1)
    assert run_batch([scans], out, workers=1).exit_code == 0
    wl = read_worklist(out)
    item = wl.items[0]
    s = _session(wl, item)
    cid = int(s.detections.calcifications.calc_id[0])
    s.accept([cid])
    wl.save_reviewed(item, s.detections)
    s.close()
    (scans / "a.tif").write_bytes(b"II*\x00damaged")
    res = run_batch([scans], out, workers=1)
    assert res.exit_code != 0
    wl = read_worklist(out)
    assert [it.stem for it in wl.items] == ["a", "b"]
    assert wl.progress(wl.items[0]).accepted == 1
    assert pd.read_csv(out / "a.calcifications.csv").set_index("calc_id").loc[cid, "status"] == "accepted"

    # a run that fails after replacing an output does not put the marker back
    write_tiff(scans / "a.tif", 0)
    import napari_calc.core.pipeline as pipeline

    def half_written(path, out_dir, **kw):
        (Path(out_dir) / "a.clusters.csv").write_text("cluster_id\n")
        raise NapariCalcError("disk full", path)

    monkeypatch.setattr(pipeline, "process_file", half_written)
    assert run_batch([scans], out, workers=1).exit_code != 0
    assert [it.stem for it in read_worklist(out).items] == ["b"]


def test_an_image_opened_without_a_decision_is_still_to_review(folder):
    """Opening an image wrote its autosave, and from then on the worklist
    called it "in progress" although nobody had decided anything."""
    wl = read_worklist(folder)
    item = wl.items[0]
    s = _session(wl, item)  # opened: the autosave holds the table only
    s.close()
    assert wl.sidecar(item).is_file()
    assert wl.progress(item).state == "to review"
    s = _session(wl, item)
    s.set_labels([int(s.detections.calcifications.calc_id[0])], morphology="punctate")
    assert wl.progress(item, s).state == "in progress"  # a label is a decision too
    s.close()


def test_a_run_that_fails_while_writing_leaves_no_partial_set(tmp_path, monkeypatch):
    """A full disk after the first table: the tables stayed, without a marker."""
    import errno

    import napari_calc.core.pipeline as pipeline

    scans, out = tmp_path / "scans", tmp_path / "out"
    write_tiff(scans / "a.tif", 0)

    def disk_full(path, out_dir, **kw):
        (Path(out_dir) / "a.calcifications.csv").write_text("calc_id\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline, "process_file", disk_full)
    res = run_batch([scans], out, workers=1)
    assert res.exit_code != 0
    assert not any(p.name.startswith("a.") for p in out.iterdir()), sorted(out.iterdir())
