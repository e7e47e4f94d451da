"""Review autosave: the sidecar journal, restore, compaction, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import napari_calc.core.review as review
from napari_calc.core.errors import NapariCalcError
from napari_calc.core.review import ReviewSession, sidecar_path_for
from napari_calc.core.review_sidecar import SidecarError, read_sidecar

ROOT = Path(__file__).resolve().parents[1]

# Shared by the tests and the child process of the SIGKILL test: a
# deterministic review script.
SCRIPT = textwrap.dedent('''
    import numpy as np, pandas as pd
    from napari_calc.core.detect import DetectionParams
    from napari_calc.core.detections import Detections

    def make_det(n=400, seed=0):
        rng = np.random.default_rng(seed)
        r = rng.integers(0, 800, n); c = rng.integers(0, 600, n)
        df = pd.DataFrame({
            "calc_id": np.arange(n, dtype=np.int64), "row": r, "col": c,
            "y_mm": r * 0.1, "x_mm": c * 0.1, "diameter_mm": rng.uniform(0.1, 1.0, n),
            "contrast": rng.random(n), "cnr": rng.random(n) * 5, "score": rng.random(n),
            "cluster_id": np.full(n, -1, dtype=np.int64),
            "status": pd.Series(["candidate"] * n, dtype=object)})
        return Detections(calcifications=df, clusters=pd.DataFrame(), spacing_mm=(0.1, 0.1),
                          image_shape=(800, 600), params=dict(DetectionParams().__dict__),
                          metadata={"source_path": "/data/img.dcm"})

    def step(s, i):
        """Action number i (deterministic given the state)."""
        ids = s.detections.calcifications["calc_id"].to_numpy()
        a = int(ids[(i * 37) % len(ids)])
        k = i % 9
        if k == 0: s.accept([a])
        elif k == 1: s.reject([a, int(ids[(i * 11) % len(ids)])])
        elif k == 2: s.add(10 + (i * 7) % 780, 10 + (i * 13) % 580, morphology="punctate")
        elif k == 3: s.set_labels([a], distribution="grouped", suspicion="suspicious")
        elif k == 4: s.undo()
        elif k == 5: s.move(a, (i * 5) % 800, (i * 3) % 600)
        elif k == 6: s.delete([a])
        elif k == 7: s.redo() or s.reset([a])
        else: s.set_threshold(0.3 + (i % 5) / 10)
''')
ns: dict = {}
exec(SCRIPT, ns)
make_det, step = ns["make_det"], ns["step"]

TIME_COLS = ["reviewed_at", "created_at"]


def state(sess: ReviewSession) -> dict:
    """A frozen copy of what assert_same_state compares."""
    return dict(calcs=sess.detections.calcifications.copy(), clusters=sess.detections.clusters.copy(),
                threshold=sess.threshold, can_undo=sess.can_undo, can_redo=sess.can_redo)


def assert_same_state(a, b, *, times=True):
    """Compare two sessions (or state() snapshots)."""
    a = a if isinstance(a, dict) else state(a)
    b = b if isinstance(b, dict) else state(b)
    for k in ("threshold", "can_undo", "can_redo"):
        assert a[k] == b[k], k
    pd.testing.assert_frame_equal(a["clusters"], b["clusters"])
    da, db = a["calcs"], b["calcs"]
    if not times:
        da, db = da.drop(columns=TIME_COLS), db.drop(columns=TIME_COLS)
    pd.testing.assert_frame_equal(da, db)


def all_lines_parse(path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines()]


def test_sidecar_path_for(tmp_path):
    img = tmp_path / "a" / "case1.dcm"
    assert sidecar_path_for(img) == tmp_path / "a" / "case1.napari-calc-review.jsonl"
    assert sidecar_path_for(tmp_path / "x.ome.tif").name == "x.napari-calc-review.jsonl"
    assert sidecar_path_for(tmp_path / "series_dir").name == "series_dir.napari-calc-review.jsonl"
    proj = tmp_path / "proj"
    p1 = sidecar_path_for(tmp_path / "a" / "case1.dcm", proj)
    p2 = sidecar_path_for(tmp_path / "b" / "case1.dcm", proj)
    assert p1.parent == proj and p1.name.startswith("case1-") and p1.name.endswith(".napari-calc-review.jsonl")
    assert p1 != p2  # same name, other folder: other sidecar
    assert sidecar_path_for(None) is None
    assert sidecar_path_for(None, proj).parent == proj


def test_every_action_is_one_standard_json_line(tmp_path):
    sc = tmp_path / "r.jsonl"
    s = ReviewSession(make_det(), sidecar=sc, annotator="ada")
    assert len(all_lines_parse(sc)) == 1  # the header, written atomically
    for i in range(12):
        step(s, i)
    lines = sc.read_text().splitlines()
    assert len(lines) == 1 + len(s.history)
    recs = [json.loads(ln, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}")) for ln in lines]
    assert recs[0]["format"] == "napari-calc review" and recs[0]["version"] == 1
    assert recs[0]["image"] == {"source_path": "/data/img.dcm", "shape": [800, 600], "spacing_mm": [0.1, 0.1]}
    assert [r["seq"] for r in recs[1:]] == list(range(1, len(recs)))
    assert [r["op"] for r in recs[1:]] == [h["op"] for h in s.history]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_restore_equals_live_state_and_continues(tmp_path):
    sc = tmp_path / "r.jsonl"
    s = ReviewSession(make_det(), sidecar=sc, annotator="ada")
    mem = ReviewSession(make_det(), annotator="ada")  # the same review, not saved
    for i in range(30):
        step(s, i)
        step(mem, i)
    r = ReviewSession.restore(sc, annotator="bob")
    assert_same_state(s, r)
    assert r.history == s.history and r.annotator == "bob"
    assert r.detections.image_shape == (800, 600) and r.detections.spacing_mm == (0.1, 0.1)
    assert r.detections.metadata["source_path"] == "/data/img.dcm"
    # the restored session supersedes the old one on the same file
    assert s.closed
    with pytest.raises(SidecarError, match="superseded"):
        s.accept([1])
    # it continues like the live one would have, undo included
    for sess in (mem, r):
        sess.annotator = "bob"
        sess.undo()
        sess.undo()
        sess.redo()
        step(sess, 31)
    assert_same_state(mem, r, times=False)
    r.close()
    with pytest.raises(SidecarError, match="closed"):
        r.accept([1])
    assert_same_state(ReviewSession.restore(sc), r)  # what r wrote restores too


def test_a_sidecar_locked_by_another_process_is_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    sc = tmp_path / "r.jsonl"
    s = ReviewSession(make_det(), sidecar=sc)
    s.accept([1])
    s.close()
    with open(sc, "rb") as f:  # another process would hold such a lock
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SidecarError, match="another napari-calc session"):
            ReviewSession.restore(sc)
        with pytest.raises(SidecarError, match="another napari-calc session"):
            ReviewSession(make_det(), sidecar=sc)
    assert ReviewSession.restore(sc).history == s.history


def test_truncated_last_line_loses_only_that_action(tmp_path):
    sc = tmp_path / "r.jsonl"
    s = ReviewSession(make_det(), sidecar=sc)
    for i in range(8):
        step(s, i)
    before_last = sc.read_bytes()
    ref = state(s)  # after 8 actions
    s.accept([5, 6, 7])
    s.close()
    full = sc.read_bytes()
    assert len(full) > len(before_last)
    for cut in (len(before_last) + 1, (len(before_last) + len(full)) // 2, len(full) - 2):
        sc.write_bytes(full[:cut])  # a write interrupted by a crash
        r = ReviewSession.restore(sc)
        assert r.restored_dropped_last_line
        assert_same_state(r, ref)
        assert sc.read_bytes() == before_last  # the partial line is cut off before appending
        r.reject([1])  # appending after a crash gives a valid journal again
        r.close()
        r2 = ReviewSession.restore(sc)
        assert_same_state(r2, r)
        r2.close()
        all_lines_parse(sc)


def test_complete_last_line_without_newline_is_kept(tmp_path):
    sc = tmp_path / "r.jsonl"
    s = ReviewSession(make_det(), sidecar=sc)
    s.accept([1])
    s.reject([2])
    s.close()
    sc.write_bytes(sc.read_bytes()[:-1])  # everything but the final newline
    r = ReviewSession.restore(sc)
    assert not r.restored_dropped_last_line
    assert_same_state(r, s)
    r.accept([3])
    r.close()
    assert len(all_lines_parse(sc)) == 4


def test_garbage_last_line_is_dropped(tmp_path):
    sc = tmp_path / "r.jsonl"
    s = ReviewSession(make_det(), sidecar=sc)
    s.accept([1])
    s.close()
    with open(sc, "ab") as f:
        f.write(b'{"op": "reject", "seq": 2, "changes": [{"kind": "set", "ids": [9999]\n')
    r = ReviewSession.restore(sc)
    assert r.restored_dropped_last_line
    assert_same_state(r, s)


def test_corrupt_sidecars_raise_naming_the_file(tmp_path):
    sc = tmp_path / "case.napari-calc-review.jsonl"
    s = ReviewSession(make_det(), sidecar=sc)
    for i in range(4):
        step(s, i)
    s.close()
    good = sc.read_text().splitlines(keepends=True)

    def expect_error(text, match):
        sc.write_text(text)
        with pytest.raises(NapariCalcError, match=match) as ei:
            ReviewSession.restore(sc)
        assert str(sc) in str(ei.value) and "\n" not in str(ei.value)

    expect_error("".join([good[0], "not json\n", *good[2:]]), "corrupt at line 2")
    expect_error("".join([good[0][:40] + "\n", *good[1:]]), "not a napari-calc review sidecar")
    expect_error('{"format": "something else"}\n', "not a napari-calc review sidecar")
    hdr = json.loads(good[0])
    expect_error(json.dumps({**hdr, "version": 99}) + "\n", "version 99")
    expect_error(json.dumps({**hdr, "detections": {"columns": ["a"]}}) + "\n", "header is corrupt")
    expect_error("".join([good[0], good[2], good[1], *good[3:]]), "corrupt at action")  # out of order
    expect_error("", "empty")
    sc.unlink()
    with pytest.raises(SidecarError, match="cannot read"):
        ReviewSession.restore(sc)


def test_compaction_keeps_state_and_undo(tmp_path, monkeypatch):
    monkeypatch.setattr(review, "COMPACT_EVERY", 6)
    sc = tmp_path / "r.jsonl"
    s = ReviewSession(make_det(), sidecar=sc, annotator="ada")
    mem = ReviewSession(make_det(), annotator="ada")
    for i in range(27):
        step(s, i)
        step(mem, i)
        assert len(sc.read_text().splitlines()) <= 1 + 6
    hdr = json.loads(sc.read_text().splitlines()[0])
    assert hdr["seq"] > 0 and hdr["undo"]  # a fresh snapshot with the undo stack
    r = ReviewSession.restore(sc)
    assert_same_state(r, s)
    assert r.history == s.history
    while mem.undo():  # undo reaches back past every compaction
        assert r.undo()
        assert_same_state(r, mem, times=False)
    assert not r.undo()
    fresh = ReviewSession(make_det())
    r.set_threshold(fresh.threshold)  # a view setting: not undone
    pd.testing.assert_frame_equal(r.detections.calcifications, fresh.detections.calcifications)


def test_open_or_create(tmp_path):
    sc = tmp_path / "img.napari-calc-review.jsonl"
    det = make_det()
    s = ReviewSession.open_or_create(det, sc, annotator="ada")
    s.accept([1, 2])
    s.close()
    r = ReviewSession.open_or_create(det, sc)  # same image: restored
    assert_same_state(r, s)
    r.close()
    other = make_det()
    other.image_shape = (900, 600)
    n = ReviewSession.open_or_create(other, sc)  # another image: new review, old one kept aside
    assert not n.history and (n.detections.calcifications.status == "candidate").all()
    bak = sc.with_name(sc.name + ".bak")
    assert bak.exists() and json.loads(bak.read_text().splitlines()[0])["image"]["shape"] == [800, 600]
    n.close()
    sc.write_text("garbage\n")  # a corrupt sidecar is reported, never overwritten
    with pytest.raises(SidecarError):
        ReviewSession.open_or_create(det, sc)
    assert sc.read_text() == "garbage\n"


def test_a_table_saved_after_the_autosave_is_what_reopens(tmp_path):
    """An exported table edited in a spreadsheet and reopened: the older
    autosave silently replaced the edits (and the next save wrote it over
    the file). A table newer than the autosave, with another review, is
    shown; an older one, or the same review, restores the autosave."""
    from napari_calc.core.export import read_detections, write_outputs

    sc = tmp_path / "img.napari-calc-review.jsonl"
    s = ReviewSession.open_or_create(make_det(), sc, annotator="ada")
    s.accept([1, 2])
    s.close()
    write_outputs(s.detections, tmp_path, "img", formats=["csv", "json"])
    csv = tmp_path / "img.calcifications.csv"
    t = pd.read_csv(csv)
    t["morphology"] = t["morphology"].astype(object)
    t.loc[t.calc_id == 3, ["status", "morphology"]] = ["accepted", "punctate"]  # the colleague's edit
    t.to_csv(csv, index=False)

    def reopen(mtime):
        os.utime(csv, (mtime, mtime))
        det = read_detections(csv)
        det.metadata["export_path"] = str(csv)  # as the napari reader records it
        return ReviewSession.open_or_create(det, sc)

    old = os.path.getmtime(sc)
    r = reopen(old - 60)  # the autosave is the newer work: restored
    assert r.newer_file is None and r.row(3)["status"] == "candidate" and r.history
    r.close()
    n = reopen(os.path.getmtime(sc) + 60)
    assert n.newer_file == str(csv) and n.backup is not None and n.backup.exists()
    assert n.row(3)["status"] == "accepted" and n.row(3)["morphology"] == "punctate"
    assert n.row(1)["status"] == "accepted"
    n.close()
    # the same review as the autosave, saved later (an export): the autosave, with its history
    m = reopen(os.path.getmtime(sc) + 60)
    assert m.newer_file is None and m.backup is None and m.row(3)["status"] == "accepted"
    m.close()
    # the detection written again later (a batch re-run, no review in it): the autosave stands
    t = pd.read_csv(csv)
    t["status"] = "candidate"
    t["morphology"] = ""
    t.to_csv(csv, index=False)
    k = reopen(os.path.getmtime(sc) + 60)
    assert k.newer_file is None and k.backup is None and k.row(3)["status"] == "accepted"
    k.close()


def test_a_new_run_of_the_image_keeps_the_review(tmp_path):
    """The autosave of an earlier run on this image, opened with another run
    (other parameters): the new run's candidates with the review carried
    over, not the old rows in place of the new ones; every earlier sidecar
    is kept (the second one went over the first .bak)."""
    sc = tmp_path / "img.napari-calc-review.jsonl"
    first = make_det(seed=0)
    s = ReviewSession.open_or_create(first, sc, annotator="ada")
    s.accept([1, 2])
    s.reject([3])
    kept_rows = s.detections.calcifications.loc[[1, 2], ["row", "col"]].to_numpy()
    s.close()
    second = make_det(seed=0)
    second.calcifications = second.calcifications.drop(index=[3, 50]).reset_index(drop=True)
    n = ReviewSession.open_or_create(second, sc)
    c = n.detections.calcifications
    assert len(c) == len(second.calcifications)  # the new run's rows, not the sidecar's
    assert n.carried_over == {"matched": 2, "kept_as_added": 0, "dropped": 1}
    acc = c.loc[c.status == "accepted", ["row", "col"]].to_numpy()
    assert sorted(map(tuple, acc.tolist())) == sorted(map(tuple, kept_rows.tolist()))
    assert set(c.loc[c.status == "accepted", "annotator"]) == {"ada"}
    assert n.backup == sc.with_name(sc.name + ".bak") and n.backup.exists()
    n.accept([int(c.calc_id.iloc[10])])
    n.close()
    # the same run again: restored as it is (with its history)
    r = ReviewSession.open_or_create(second, sc)
    assert r.carried_over is None and r.history and (r.detections.calcifications.status == "accepted").sum() == 3
    r.close()
    # a third run: the second sidecar goes to .bak.2; .bak is untouched
    bak1 = sc.with_name(sc.name + ".bak").read_bytes()
    third = make_det(seed=0)
    t = ReviewSession.open_or_create(third, sc)
    assert t.backup == sc.with_name(sc.name + ".bak.2")
    assert sc.with_name(sc.name + ".bak").read_bytes() == bak1
    assert (t.detections.calcifications.status == "accepted").sum() == 3
    t.close()


def test_reopening_the_same_run_after_deletes_and_moves_restores(tmp_path):
    """Deleting or moving a candidate made the next open of the same
    detection look like another run: deletions undone, moves reverted, undo
    history gone. The review records the run it started on."""
    sc = tmp_path / "r.jsonl"
    s = ReviewSession.open_or_create(make_det(), sc)
    s.delete([1])
    r = s.row(2)
    s.move(2, r["row"] + 6, r["col"] + 6)
    s.accept([4])
    s.close()
    again = ReviewSession.open_or_create(make_det(), sc)
    ids = set(again.detections.calcifications.calc_id)
    assert 1 not in ids and again.row(2)["row"] == r["row"] + 6 and again.row(4)["status"] == "accepted"
    assert again.can_undo and again.carried_over is None and again.backup is None
    assert not sc.with_name(sc.name + ".bak").exists()
    again.close()


def test_a_failed_rewrite_does_not_fail_the_action(tmp_path, monkeypatch):
    """The journal is rewritten after an action is applied and journalled;
    when that failed, the action raised although it was done (a retry then
    doubled it). Now the review goes on, the journal stays complete, and the
    rewrite is tried again later."""
    from napari_calc.core.review_sidecar import SidecarWriter

    monkeypatch.setattr(review, "COMPACT_EVERY", 3)
    sc = tmp_path / "r.jsonl"
    s = ReviewSession(make_det(), sidecar=sc)
    real = SidecarWriter.write_header
    def refuse(self, header):
        raise SidecarError("cannot write review sidecar: Permission denied", self.path)
    monkeypatch.setattr(SidecarWriter, "write_header", refuse)
    for i in range(8):
        s.accept([i])
    assert s.compact_error and "Permission denied" in s.compact_error
    assert (s.detections.calcifications.status == "accepted").sum() == 8
    monkeypatch.setattr(SidecarWriter, "write_header", real)
    s.accept([8])
    s.accept([9])
    s.accept([10])
    assert s.compact_error is None
    s.close()
    assert_same_state(ReviewSession.restore(sc), s)


def test_same_stem_images_keep_their_own_reviews_and_a_moved_folder_restores(tmp_path):
    """a.tif and a.dcm side by side (as `phantom --format both` writes them)
    shared one sidecar, each open moving the other's review to .bak; a study
    folder moved elsewhere started an empty review."""
    folder = tmp_path / "study"
    folder.mkdir()
    det_t, det_d = make_det(), make_det()
    det_t.metadata = {"source_path": str(folder / "a.tif")}
    det_d.metadata = {"source_path": str(folder / "a.dcm")}
    st = ReviewSession.open_or_create(det_t, sidecar_path_for(folder / "a.tif"))
    st.accept([1])
    st.close()
    sd = ReviewSession.open_or_create(det_d, sidecar_path_for(folder / "a.dcm"))
    sd.reject([2])
    sd.close()
    assert st.sidecar != sd.sidecar and sd.sidecar.name == "a.dcm.napari-calc-review.jsonl"
    assert sorted(p.name for p in folder.iterdir()) == ["a.dcm.napari-calc-review.jsonl",
                                                        "a.napari-calc-review.jsonl"]
    rt = ReviewSession.open_or_create(det_t, sidecar_path_for(folder / "a.tif"))
    assert rt.row(1)["status"] == "accepted" and rt.row(2)["status"] == "candidate"
    rt.close()
    moved = tmp_path / "elsewhere" / "study"
    moved.parent.mkdir()
    folder.rename(moved)
    det_m = make_det()
    det_m.metadata = {"source_path": str(moved / "a.dcm")}
    rm = ReviewSession.open_or_create(det_m, sidecar_path_for(moved / "a.dcm"))
    assert rm.row(2)["status"] == "rejected" and rm.backup is None
    rm.close()


def test_restored_cluster_ids_are_the_live_ones(tmp_path, monkeypatch):
    """Cluster ids kept through edits (relative to the clusters the review
    started with) come back the same from the journal, after compactions too."""
    monkeypatch.setattr(review, "COMPACT_EVERY", 4)
    sc = tmp_path / "r.jsonl"
    s = ReviewSession(make_det(), sidecar=sc)
    start = s.detections.calcifications.cluster_id.to_numpy().copy()
    df = s.detections.calcifications
    members = df.loc[df.cluster_id == df.cluster_id.max(), "calc_id"].tolist()
    s.reject(members[:1])
    for i in range(10):
        step(s, i)
    live = s.detections.calcifications.set_index("calc_id").cluster_id
    s.close()
    r = ReviewSession.restore(sc)
    pd.testing.assert_series_equal(r.detections.calcifications.set_index("calc_id").cluster_id, live)
    while r.undo():
        pass
    r.set_threshold(s.params.cluster_min_score)  # a view setting, not undone
    np.testing.assert_array_equal(r.detections.calcifications.cluster_id.to_numpy(), start)
    r.close()


def test_restore_with_detections_of_another_image_is_refused(tmp_path):
    sc = tmp_path / "r.jsonl"
    ReviewSession(make_det(), sidecar=sc).close()
    other = make_det()
    other.image_shape = (10, 10)
    with pytest.raises(SidecarError, match="shape"):
        ReviewSession.restore(sc, other)


def test_restore_replays_journal_without_sidecar_session_equivalent(tmp_path):
    """A session without autosave and one with it end in the same state."""
    sc = tmp_path / "r.jsonl"
    a = ReviewSession(make_det(), sidecar=sc)
    b = ReviewSession(make_det())
    for i in range(20):
        step(a, i)
        step(b, i)
    assert_same_state(a, b, times=False)
    assert_same_state(ReviewSession.restore(sc), a)


CHILD = SCRIPT + textwrap.dedent('''
    import sys
    import napari_calc.core.review as review
    review.COMPACT_EVERY = 15          # also get killed around compactions
    from napari_calc.core.review import ReviewSession
    s = ReviewSession(make_det(), sidecar=sys.argv[1], annotator="child")
    print("ready", flush=True)
    for i in range(100000):
        step(s, i)
        print(f"done {i}", flush=True)
''')


def test_sigkill_mid_review_loses_at_most_the_last_action(tmp_path):
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("no SIGKILL on this platform")
    sc = tmp_path / "killed.napari-calc-review.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(sc)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    acknowledged = -1
    try:
        for line in proc.stdout:
            if line.startswith("done "):
                acknowledged = int(line.split()[1])
                if acknowledged >= 40:
                    break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert acknowledged >= 40, f"child failed: {err[-2000:]}"
    assert proc.returncode == -signal.SIGKILL

    raw = sc.read_bytes().split(b"\n")
    complete = [ln for ln in raw[:-1]]
    for ln in complete:  # every complete line is valid JSON; only a partial tail may not be
        json.loads(ln)
    header, actions, _, _ = read_sidecar(sc)

    r = ReviewSession.restore(sc)
    assert [h["seq"] for h in r.history] == list(range(1, len(r.history) + 1))
    # replay the same script in memory: every acknowledged step must be in the
    # sidecar; the child may have journaled (part of) one step more
    ref = ReviewSession(make_det(), annotator="child")
    for i in range(acknowledged + 1):
        step(ref, i)
    assert len(r.history) >= len(ref.history)
    i = acknowledged + 1
    while len(ref.history) < len(r.history):
        step(ref, i)
        i += 1
    assert i <= acknowledged + 2
    assert len(ref.history) == len(r.history)
    assert_same_state(r, ref, times=False)
    assert [h["op"] for h in r.history] == [h["op"] for h in ref.history]
    # the journal continues cleanly
    r.accept([int(r.detections.calcifications.calc_id.iloc[0])])
    r.close()
    assert_same_state(ReviewSession.restore(sc), r)


def test_extra_columns_nan_and_unicode_survive_restore(tmp_path):
    det = make_det(50)
    df = det.calcifications.copy()
    df.loc[3, "contrast"] = np.nan
    det.calcifications = df.assign(elongation=np.linspace(1, 2, 50), note="x")
    sc = tmp_path / "r.jsonl"
    s = ReviewSession(det, sidecar=sc, annotator="Zoë Ångström")
    s.add(5, 5)  # NaN contrast, cnr and elongation
    s.set_labels([3], morphology="fine linear/branching")
    r = ReviewSession.restore(sc)
    assert_same_state(r, s)
    assert r.row(3)["annotator"] == "Zoë Ångström" and np.isnan(r.row(3)["contrast"])


def test_same_candidates_other_clustering_takes_the_new_parameters(tmp_path):
    """Re-run with another cluster radius but the same candidates: the old
    review (and its radius) was restored; now it is carried over to the run."""
    sc = tmp_path / "r.jsonl"
    s = ReviewSession.open_or_create(make_det(), sc)
    s.accept([3])
    s.close()
    wider = make_det()
    wider.params = dict(wider.params, cluster_radius_mm=3.0)
    n = ReviewSession.open_or_create(wider, sc)
    assert n.params.cluster_radius_mm == 3.0 and n.row(3)["status"] == "accepted"
    assert n.backup is not None
    n.close()
    same = ReviewSession.open_or_create(wider, sc)  # and that review is then restored as it is
    assert same.carried_over is None and same.backup is None and same.row(3)["status"] == "accepted"
    same.close()


def test_move_to_takes_the_undo_history_along(tmp_path):
    """Choosing another project folder moved the decisions but not the
    undo history."""
    det = ns["make_det"](50)
    a = tmp_path / "a.jsonl"
    s = ReviewSession(det, sidecar=a, fsync=False)
    s.accept([1])
    s.reject([2])
    s.undo()
    there = tmp_path / "B"
    there.mkdir()
    b = there / "a.jsonl"
    b.write_text("an older review\n")
    s.move_to(b)
    assert s.sidecar == b and s.backup == there / "a.jsonl.bak"
    assert s.backup.read_text() == "an older review\n"  # kept, not overwritten
    s.accept([3])  # saved in B
    s.close()
    r = ReviewSession.restore(b, det, fsync=False)
    assert [r.row(i)["status"] for i in (1, 2, 3)] == ["accepted", "candidate", "accepted"]
    assert [h["op"] for h in r.history] == ["accept", "reject", "undo", "accept"]
    assert r.undo() and r.undo()  # back past the move
    assert r.row(1)["status"] == "candidate"
    r.close()
    old = ReviewSession.restore(a, det, read_only=True)  # the old place: as it was left
    assert [h["op"] for h in old.history] == ["accept", "reject", "undo"]


def test_move_to_a_place_that_cannot_be_written_keeps_saving_where_it_did(tmp_path):
    det = ns["make_det"](50)
    a = tmp_path / "a.jsonl"
    s = ReviewSession(det, sidecar=a, fsync=False)
    s.accept([1])
    (tmp_path / "afile").write_text("")
    with pytest.raises(SidecarError, match="x.jsonl"):
        s.move_to(tmp_path / "afile" / "x.jsonl")
    assert s.sidecar == a
    s.reject([2])  # still saved in a
    s.close()
    r = ReviewSession.restore(a, det, read_only=True)
    assert [r.row(i)["status"] for i in (1, 2)] == ["accepted", "rejected"]
    s2 = ReviewSession(det, fsync=False)  # no autosave yet: move_to starts one
    s2.accept([4])
    s2.move_to(tmp_path / "c.jsonl")
    s2.move_to(None)  # and stops it; undo still works
    assert s2.sidecar is None and s2.undo()
    assert ReviewSession.restore(tmp_path / "c.jsonl", det, read_only=True).row(4)["status"] == "accepted"
