"""Local batch processing (issue 8): resume, fault isolation, crash/timeout
recovery, SIGKILL midway, manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_calc.cli import main
from napari_calc.core.batch import (MANIFEST_NAME, LocalPool, make_task, marker_path, process_input,
                                    run_batch, threads_per_worker, InputItem)

from test_batch_support import csv_files, data_files, make_dataset, write_tiff

REPO = Path(__file__).resolve().parents[1]


def _manifest(out) -> dict:
    return json.loads((Path(out) / MANIFEST_NAME).read_text())


def _status(out) -> dict[str, str]:
    return {Path(r["input"]).name: r["status"] for r in _manifest(out)["inputs"]}


_SAFEPATH_BEFORE = os.environ.get("PYTHONSAFEPATH")

# ------------------------------------------------------------------ helpers run in pool workers

def crash_or_process(task):
    """Segfault on inputs named crash*, else the real work."""
    if Path(task["path"]).name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return process_input(task)


def hang_or_process(task):
    if Path(task["path"]).name.startswith("slow"):
        time.sleep(600)
    return process_input(task)


def hang_after_saying_so(task):
    """Write ``<out_dir>/started``, then sleep (a worker busy on a long image)."""
    Path(task["out_dir"], "started").write_text(str(os.getpid()))
    time.sleep(600)


def _processes_with(token: str) -> list[int]:
    """Pids of the processes whose environment holds ``NCT_TOKEN=<token>``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if f"NCT_TOKEN={token}".encode() in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _gone(token: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while _processes_with(token):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill_all(token: str) -> None:
    for pid in _processes_with(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# ------------------------------------------------------------------ tests

def test_threads_per_worker():
    assert threads_per_worker(1, 8) == 8
    assert threads_per_worker(3, 8) == 2
    assert threads_per_worker(16, 8) == 1


def test_resume_skips_complete_and_recomputes_changes(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    files = make_dataset(inp, 3)
    assert main(["detect", str(inp), "--out", str(out), "--workers", "1", "--formats", "csv,json"]) == 0
    assert set(_status(out).values()) == {"done"}
    first = data_files(out)
    assert len([n for n in first if n.endswith(".done.json")]) == 3
    marker = json.loads((out / "img0.done.json").read_text())
    assert marker["input"] == str(files[0].resolve()) and marker["size"] == files[0].stat().st_size

    # rerun: everything skipped, nothing rewritten
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != MANIFEST_NAME}
    assert main(["detect", str(inp), "--out", str(out), "--workers", "1", "--formats", "csv,json"]) == 0
    assert set(_status(out).values()) == {"skipped"}
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != MANIFEST_NAME} == mtimes
    assert "3 done (3 already complete, skipped)" in capsys.readouterr().out

    # a changed input is recomputed, the others skipped
    write_tiff(files[1], seed=7)
    assert main(["detect", str(inp), "--out", str(out), "--workers", "1", "--formats", "csv,json"]) == 0
    assert _status(out) == {"img0.tif": "skipped", "img1.tif": "done", "img2.tif": "skipped"}
    assert data_files(out)["img1.calcifications.csv"] != first["img1.calcifications.csv"]

    # a missing output -> recomputed
    (out / "img2.detections.json").unlink()
    assert main(["detect", str(inp), "--out", str(out), "--workers", "1", "--formats", "csv,json"]) == 0
    assert _status(out)["img2.tif"] == "done"
    assert (out / "img2.detections.json").read_bytes() == first["img2.detections.json"]

    # other parameters or formats -> recomputed
    assert main(["detect", str(inp), "--out", str(out), "--workers", "1", "--formats", "csv",
                 "--param", "threshold=5"]) == 0
    assert set(_status(out).values()) == {"done"}
    m = _manifest(out)
    assert m["parameters"]["detection"]["threshold"] == 5
    # --force recomputes everything
    assert main(["detect", str(inp), "--out", str(out), "--workers", "1", "--formats", "csv",
                 "--param", "threshold=5", "--force"]) == 0
    assert set(_status(out).values()) == {"done"}


def test_corrupt_files_reported_one_line_each(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    make_dataset(inp, 3)
    good = (inp / "img0.tif").read_bytes()
    (inp / "sub").mkdir()
    (inp / "sub" / "truncated.tif").write_bytes(good[: len(good) // 3])
    (inp / "sub" / "text.dcm").write_text("this is not DICOM\n")
    (inp / "empty.dcm").write_bytes(b"")
    (inp / "notes.txt").write_text("a note, not an image: skipped silently\n")

    rc = main(["detect", str(inp), "--out", str(out), "--workers", "2", "--no-progress"])
    cap = capsys.readouterr()
    assert rc != 0
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 3, cap.err
    for name in ("truncated.tif", "text.dcm", "empty.dcm"):
        (line,) = [ln for ln in lines if name in ln]
        assert line.startswith("napari-calc: ") and line.split(name, 1)[1].startswith(": ")
        assert len(line.split(name, 1)[1]) > 5  # a reason follows
        assert "Traceback" not in line
    assert "empty" in [ln for ln in lines if "empty.dcm" in ln][0].split("empty.dcm")[1]
    # the good ones are complete, the bad ones wrote nothing
    for i in range(3):
        assert (out / f"img{i}.done.json").is_file()
    assert not any(p.name.startswith(("truncated", "text", "empty")) for p in out.iterdir())
    st = _status(out)
    assert st["truncated.tif"] == st["text.dcm"] == st["empty.dcm"] == "failed"
    assert "notes.txt" not in st
    assert "3 failed" in cap.out and "6 images" in cap.out
    m = _manifest(out)
    assert m["totals"]["failed"] == 3 and m["totals"]["done"] == 3
    assert all(r["reason"] for r in m["inputs"] if r["status"] == "failed")
    # a rerun retries only the failed inputs, and still fails
    assert main(["detect", str(inp), "--out", str(out), "--workers", "1"]) != 0
    assert sorted(_status(out).values()) == ["failed"] * 3 + ["skipped"] * 3


def test_manifest_content(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    make_dataset(inp, 2)
    res = run_batch([inp], out, workers=1, formats=("csv", "json"), params={"threshold": 4.5})
    assert res.exit_code == 0 and res.n_done == 2
    m = _manifest(out)
    for k in ("napari-calc", "numpy", "pydicom", "python", "kernel_openmp"):
        assert k in m["versions"]
    assert m["parameters"]["detection"]["threshold"] == 4.5
    assert m["parameters"]["formats"] == ["csv", "json"]
    assert m["finished"] and m["totals"]["images"] == 2
    rec = m["inputs"][0]
    assert rec["status"] == "done" and rec["seconds"] > 0
    assert rec["outputs"]["csv"] == "img0.calcifications.csv"
    tot = sum(r["n_calcifications"] for r in m["inputs"])
    assert tot == res.n_calcifications == m["totals"]["calcifications"]
    import pandas as pd

    assert tot == sum(len(pd.read_csv(out / f"img{i}.calcifications.csv")) for i in range(2))


def test_same_stem_disambiguated(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_tiff(inp / "left" / "a.tif", 0)
    write_tiff(inp / "right" / "a.tif", 1)
    write_tiff(inp / "b.tif", 2)
    assert run_batch([inp], out, workers=1).exit_code == 0
    names = sorted(p.name for p in out.glob("*.calcifications.csv"))
    assert names == ["b.calcifications.csv", "left__a.calcifications.csv", "right__a.calcifications.csv"]


def test_pool_survives_worker_crash(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    files = make_dataset(inp, 3)
    crash = inp / "crash.tif"
    crash.write_bytes(files[0].read_bytes())
    items = [InputItem(path=str(p), root=str(inp), stem=p.stem) for p in [crash] + files]
    tasks = [make_task(it, out, formats=("csv",), params={}, spacing_mm=None, deidentify=False,
                       n_threads=1) for it in items]
    results = {Path(r["path"]).name: r for r in LocalPool(2, crash_or_process).map_unordered(tasks)}
    assert results["crash.tif"]["status"] == "failed"
    assert results["crash.tif"]["reason"] == "worker process crashed (SIGSEGV)"
    assert all(results[f"img{i}.tif"]["status"] == "done" for i in range(3))
    assert not marker_path(out, "crash").exists()


def test_pool_timeout_kills_and_replaces_worker(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    files = make_dataset(inp, 2)
    slow = inp / "slow.tif"
    slow.write_bytes(files[0].read_bytes())
    items = [InputItem(path=str(p), root=str(inp), stem=p.stem) for p in [slow] + files]
    tasks = [make_task(it, out, formats=("csv",), params={}, spacing_mm=None, deidentify=False,
                       n_threads=1) for it in items]
    t0 = time.monotonic()
    # one worker: the two good inputs need the replacement worker
    results = {Path(r["path"]).name: r for r in LocalPool(1, hang_or_process, timeout=6).map_unordered(tasks)}
    assert results["slow.tif"] == {**results["slow.tif"], "status": "failed", "reason": "timed out after 6 s"}
    assert results["img0.tif"]["status"] == results["img1.tif"]["status"] == "done"
    assert time.monotonic() - t0 < 300  # the 600 s sleeper was killed, not waited for


def test_cli_timeout_option(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    make_dataset(inp, 1)
    # a generous timeout: the run goes through a killable worker process and succeeds
    assert main(["detect", str(inp), "--out", str(out), "--workers", "1", "--timeout", "120"]) == 0
    assert _manifest(out)["parameters"]["backend"] == "local processes"
    assert main(["detect", str(inp), "--out", str(out), "--timeout", "0"]) != 0
    assert "--timeout must be > 0" in capsys.readouterr().err


def test_bad_settings_one_line(tmp_path, capsys):
    inp = tmp_path / "in"
    make_dataset(inp, 1)
    assert main(["detect", str(inp), "--out", str(tmp_path / "o"), "--workers", "0"]) != 0
    assert main(["detect", str(inp), "--out", str(tmp_path / "o"), "--param", "nope=1"]) != 0
    assert main(["detect", str(inp), "--out", str(tmp_path / "o"), "--param", "threshold=-1"]) != 0
    for bad in ("threshold=abc", "threshold=nan", "min_cluster_size=abc", "max_candidates=1.5",
                "use_mask=maybe"):
        assert main(["detect", str(inp), "--out", str(tmp_path / "o"), "--param", bad]) != 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 8 and "--workers" in err[0] and "nope" in err[1] and "threshold" in err[2]
    assert [e.split(" must ")[0] for e in err[3:]] == [
        "napari-calc: threshold", "napari-calc: threshold", "napari-calc: min_cluster_size",
        "napari-calc: max_candidates", "napari-calc: use_mask"]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.csv"))


def test_empty_folder_is_a_failure(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["detect", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) != 0
    (line,) = capsys.readouterr().err.splitlines()
    assert "empty" in line and "no DICOM or TIFF images" in line


def _cli(*args):
    return [sys.executable, "-m", "napari_calc", "detect", *map(str, args)]


def test_sigkill_midway_then_resume_is_byte_identical(tmp_path):
    inp = tmp_path / "in"
    make_dataset(inp, 6)
    ref, out = tmp_path / "ref", tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    fmt = ("--formats", "csv,json")

    proc = subprocess.Popen(_cli(inp, "--out", out, "--workers", "1", *fmt), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and any(out.glob("*.done.json")):
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    n_marked = len(list(out.glob("*.done.json")))
    assert 1 <= n_marked < 6
    m = _manifest(out)  # written at the start, never half-written
    assert m["finished"] is None

    # the rerun and the uninterrupted reference run in this process
    assert main(["detect", str(inp), "--out", str(out), "--workers", "1", *fmt]) == 0
    st = _status(out)
    assert sum(v == "skipped" for v in st.values()) == n_marked
    assert sum(v == "done" for v in st.values()) == 6 - n_marked
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

    assert main(["detect", str(inp), "--out", str(ref), "--workers", "1", *fmt]) == 0
    a, b = data_files(out), data_files(ref)
    assert sorted(a) == sorted(b)
    assert len([n for n in a if n.endswith(".csv")]) == 12 and len([n for n in a if n.endswith(".json")]) == 12
    for name in a:
        assert a[name] == b[name], name


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_sigterm_stops_cleanly_and_the_rerun_resumes(tmp_path):
    """SIGTERM (``kill``, ``timeout``, SLURM, Kubernetes) is a clean stop like
    Ctrl-C: one line, exit 143, the manifest says interrupted and lists what
    finished, no temporary left, no worker left running. Before, the process
    died at once: no line, every input "pending", temporaries and a worker
    that went on writing outputs."""
    inp, out = tmp_path / "in", tmp_path / "out"
    make_dataset(inp, 10)
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    env = dict(os.environ, NCT_TOKEN=token,
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(_cli(inp, "--out", out, "--workers", "2", "--formats", "csv,json,sr.dcm"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # three markers from two workers: one worker has started a second
        # image, which it gets only after the batch recorded its first
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and len(list(out.glob("*.done.json"))) >= 3:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
        assert _gone(token, 10), "a worker outlived the stopped run"
    finally:
        proc.kill()
        _kill_all(token)
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, err)
    (line,) = err.splitlines()
    assert line.startswith("napari-calc: interrupted by SIGTERM; ") and "of 10 inputs finished" in line
    m = _manifest(out)
    assert m["interrupted"] is True and m["interrupted_by"] == "SIGTERM" and m["finished"] is None
    done = {Path(r["input"]).stem for r in m["inputs"] if r["status"] == "done"}
    assert done and m["totals"]["done"] == len(done) < 10
    assert {Path(r["input"]).stem for r in m["inputs"] if r["status"] == "pending"} == \
        {f"img{i}" for i in range(10)} - done
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    # the manifest's done inputs are those with a marker, and the rerun does the rest
    assert {p.name[:-len(".done.json")] for p in out.glob("*.done.json")} == done
    assert main(["detect", str(inp), "--out", str(out), "--workers", "2", "--formats", "csv,json,sr.dcm"]) == 0
    st = _status(out)
    assert sum(v == "done" for v in st.values()) + sum(v == "skipped" for v in st.values()) == 10


@pytest.mark.parametrize("force", [False, True])
def test_a_stop_counts_the_input_that_finished_as_it_came(tmp_path, monkeypatch, force):
    """An input whose marker was written as the stop came (its result not
    yet back) was left "pending" and out of the count; and after a --force
    run, "run the same command again" would have redone everything."""
    import napari_calc.core.batch as b

    inp, out = tmp_path / "in", tmp_path / "out"
    make_dataset(inp, 3)
    real = b.atomic_write_text

    def write_then_stop(path, text, *a, **k):
        real(path, text, *a, **k)
        if Path(path).name == "img1.done.json":
            raise KeyboardInterrupt  # Ctrl-C right after the marker, before the result

    monkeypatch.setattr(b, "atomic_write_text", write_then_stop)
    with pytest.raises(KeyboardInterrupt) as info:
        run_batch([inp], out, workers=1, force=force)
    assert info.value.progress == (f"2 of 3 inputs finished, their outputs kept in {out}; run the same "
                                   f"command {'without --force' if force else 'again'} to do the rest")
    m = _manifest(out)
    assert _status(out) == {"img0.tif": "done", "img1.tif": "done", "img2.tif": "pending"}
    assert m["totals"]["done"] == 2 and m["interrupted_by"] == "SIGINT"
    rec = next(r for r in m["inputs"] if r["stem"] == "img1")
    assert rec["outputs"]["csv"] == "img1.calcifications.csv" and rec["n_calcifications"] > 0


def test_a_stopped_force_run_does_not_count_markers_of_earlier_runs(tmp_path, monkeypatch):
    import napari_calc.core.batch as b

    inp, out = tmp_path / "in", tmp_path / "out"
    make_dataset(inp, 3)
    assert run_batch([inp], out, workers=1).n_done == 3
    real = b.atomic_write_text

    def write_then_stop(path, text, *a, **k):
        real(path, text, *a, **k)
        if Path(path).name == "img1.done.json":
            raise KeyboardInterrupt

    monkeypatch.setattr(b, "atomic_write_text", write_then_stop)
    with pytest.raises(KeyboardInterrupt) as info:
        run_batch([inp], out, workers=1, force=True)
    assert info.value.progress.startswith("2 of 3 inputs finished")
    assert _status(out) == {"img0.tif": "done", "img1.tif": "done", "img2.tif": "pending"}


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_workers_end_with_a_killed_batch(tmp_path):
    """A batch process killed outright (``kill -9``, the out-of-memory killer)
    takes its workers with it. They are children of multiprocessing's fork
    server, so before they went on with their image, writing outputs into a
    run that had ended."""
    inp, out = tmp_path / "in", tmp_path / "out"
    (f,) = make_dataset(inp, 1)
    out.mkdir()
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from pathlib import Path\n"
        "from napari_calc.core.batch import InputItem, LocalPool, make_task\n"
        "from test_batch import hang_after_saying_so\n"
        "it = InputItem(path=sys.argv[2], root=str(Path(sys.argv[2]).parent), stem='img0')\n"
        "task = make_task(it, sys.argv[3], formats=('csv',), params={}, spacing_mm=None, deidentify=False,"
        " n_threads=1)\n"
        "next(LocalPool(1, hang_after_saying_so).map_unordered([task]))\n")
    env = dict(os.environ, NCT_TOKEN=token,
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).parent), str(f), str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "started").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (out / "started").exists(), "the worker did not start"
        proc.kill()
        proc.wait()
        assert _gone(token, 10), "the worker outlived the killed batch process"
    finally:
        proc.kill()
        _kill_all(token)


def test_a_rerun_keeps_outputs_edited_since_and_reviewed_tables(tmp_path, capsys):
    """A re-run with other parameters replaced a table whose statuses were
    edited in a spreadsheet, and markups moved in 3D Slicer, with no copy: a
    lost annotation. They are now copied to ``.bak`` first, said in one line
    each, and recorded in the manifest; outputs nobody touched are replaced
    without a copy, and a backup is never overwritten."""
    import pandas as pd

    inp, out = tmp_path / "in", tmp_path / "out"
    make_dataset(inp, 3)
    fmt = ("--formats", "csv,json,mrk.json", "--workers", "1")
    assert main(["detect", str(inp), "--out", str(out), *fmt]) == 0
    capsys.readouterr()
    # img0: a status edited in a spreadsheet; img1: markups edited in Slicer
    t = pd.read_csv(out / "img0.calcifications.csv")
    t.loc[0, "status"] = "accepted"
    t.to_csv(out / "img0.calcifications.csv", index=False)
    edited_csv = (out / "img0.calcifications.csv").read_bytes()
    mrk = json.loads((out / "img1.mrk.json").read_text())
    mrk["markups"][0]["controlPoints"][0]["position"][0] += 1.5
    (out / "img1.mrk.json").write_text(json.dumps(mrk))
    edited_mrk = (out / "img1.mrk.json").read_bytes()
    # img2: a reviewed table saved into the folder by hand (no record of it)
    t2 = pd.read_csv(out / "img2.calcifications.csv")
    t2.loc[1, "status"] = "rejected"
    marker_path(out, "img2").unlink()
    t2.to_csv(out / "img2.calcifications.csv", index=False)
    reviewed = (out / "img2.calcifications.csv").read_bytes()
    untouched_json = (out / "img2.detections.json").read_bytes()

    assert main(["detect", str(inp), "--out", str(out), *fmt, "--param", "threshold=5"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert sorted(err) == sorted([
        f"napari-calc: {inp / 'img0.tif'}: img0.calcifications.csv changed since napari-calc wrote it: "
        "kept as img0.calcifications.csv.bak before writing the new outputs",
        f"napari-calc: {inp / 'img1.tif'}: img1.mrk.json changed since napari-calc wrote it: "
        "kept as img1.mrk.json.bak before writing the new outputs",
        f"napari-calc: {inp / 'img2.tif'}: img2.calcifications.csv holds a review: "
        "kept as img2.calcifications.csv.bak before writing the new outputs"]), err
    assert (out / "img0.calcifications.csv.bak").read_bytes() == edited_csv
    assert (out / "img1.mrk.json.bak").read_bytes() == edited_mrk
    assert (out / "img2.calcifications.csv.bak").read_bytes() == reviewed
    assert set(pd.read_csv(out / "img0.calcifications.csv")["status"]) == {"candidate"}  # the new run
    assert (out / "img2.detections.json").read_bytes() != untouched_json  # replaced, no copy
    assert sorted(p.name for p in out.glob("*.bak*")) == [
        "img0.calcifications.csv.bak", "img1.mrk.json.bak", "img2.calcifications.csv.bak"]
    kept = {Path(r["input"]).name: r.get("kept") for r in _manifest(out)["inputs"]}
    assert kept["img0.tif"] == {"img0.calcifications.csv": {"kept_as": "img0.calcifications.csv.bak",
                                                            "why": "changed since napari-calc wrote it"}}

    # edited again, then re-run: a second copy, the first one left as it was
    t = pd.read_csv(out / "img0.calcifications.csv")
    t.loc[0, "status"] = "rejected"
    t.to_csv(out / "img0.calcifications.csv", index=False)
    again = (out / "img0.calcifications.csv").read_bytes()
    assert main(["detect", str(inp), "--out", str(out), *fmt, "--param", "threshold=4"]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("img0.calcifications.csv changed since napari-calc wrote it: "
                         "kept as img0.calcifications.csv.bak.2 before writing the new outputs")
    assert (out / "img0.calcifications.csv.bak").read_bytes() == edited_csv
    assert (out / "img0.calcifications.csv.bak.2").read_bytes() == again


def test_outputs_of_another_input_are_not_replaced_silently(tmp_path, capsys):
    """A second run into the same --out with another image of the same name
    replaced the first one's outputs, silently. It is now a failed input
    naming the other image; --force replaces them; the same file moved to
    another folder is not another input."""
    d1, d2, out = tmp_path / "site1", tmp_path / "site2", tmp_path / "out"
    write_tiff(d1 / "a.tif", 0)
    write_tiff(d2 / "a.tif", 1)
    assert main(["detect", str(d1), "--out", str(out), "--workers", "1"]) == 0
    first = data_files(out)
    capsys.readouterr()
    assert main(["detect", str(d2), "--out", str(out), "--workers", "1"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"napari-calc: {d2 / 'a.tif'}: {out / 'a'}.* hold the outputs of another input, "
                    f"{d1 / 'a.tif'}; use another --out, or --force to replace them")
    assert data_files(out) == first
    assert _status(out) == {"a.tif": "failed"}

    moved = tmp_path / "moved"
    d1.rename(moved)  # the same file: recomputed (its path changed), not refused
    assert main(["detect", str(moved), "--out", str(out), "--workers", "1"]) == 0
    assert csv_files(out) == {k: v for k, v in first.items() if k.endswith(".csv")}

    assert main(["detect", str(d2), "--out", str(out), "--workers", "1", "--force"]) == 0
    assert csv_files(out) != {k: v for k, v in first.items() if k.endswith(".csv")}
    assert json.loads(marker_path(out, "a").read_text())["input"] == str(d2 / "a.tif")


def test_an_unlistable_sub_folder_and_a_dangling_link_are_one_line_each(tmp_path, capsys, monkeypatch):
    """One sub-folder that cannot be listed dropped its whole input folder,
    under the top folder's name; a dangling ``x.dcm`` link was skipped
    without a word. Each is now one line naming it, and the rest is done."""
    inp, out = tmp_path / "in", tmp_path / "out"
    write_tiff(inp / "a" / "x.tif", 0)
    write_tiff(inp / "b" / "y.tif", 1)
    write_tiff(inp / "z.tif", 2)
    (inp / "gone.dcm").symlink_to(tmp_path / "nowhere.dcm")
    real = os.listdir

    def listdir(path="."):  # the OS refusing one folder (root is never refused a chmod 000)
        if os.fspath(path) == str(inp / "a"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    assert main(["detect", str(inp), "--out", str(out), "--workers", "1"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert sorted(err) == [f"napari-calc: {inp / 'a'}: cannot list folder (Permission denied)",
                           f"napari-calc: {inp / 'gone.dcm'}: broken symbolic link: its target does not exist"]
    st = {Path(r["input"]).name: r["status"] for r in _manifest(out)["inputs"]}
    assert st == {"a": "failed", "gone.dcm": "failed", "y.tif": "done", "z.tif": "done"}


def test_a_newline_in_a_file_name_does_not_split_its_error_line(tmp_path, capfd):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "bad\nname.dcm").write_text("not an image")
    (inp / "tab\there.tif").write_text("nor this")
    rc = subprocess.run(_cli(inp, "--out", tmp_path / "o", "--workers", "1"), capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert rc.returncode == 1
    assert sorted(rc.stderr.splitlines()) == [
        f"napari-calc: {inp}/bad\\nname.dcm: not a DICOM or TIFF image (format not recognised)",
        f"napari-calc: {inp}/tab\\there.tif: not a DICOM or TIFF image (format not recognised)"]


def test_an_unreadable_table_in_the_way_is_kept(tmp_path):
    from napari_calc.core.export import output_paths
    from napari_calc.core.pipeline import keep_edited_outputs

    paths = output_paths(tmp_path, "a", ("csv", "json"))
    paths["csv"].write_text("calc_id;row;col\n1;2;3\n")  # someone's table, not ours
    paths["json"].write_text(json.dumps({"format": "napari-calc detections"}))
    paths["clusters.csv"].write_text("x\n")  # no review possible: replaced
    kept = keep_edited_outputs(paths)
    assert set(kept) == {"a.calcifications.csv", "a.detections.json"}
    assert (tmp_path / "a.calcifications.csv.bak").read_text() == "calc_id;row;col\n1;2;3\n"


def test_workers_two_matches_in_process(tmp_path):
    inp = tmp_path / "in"
    make_dataset(inp, 3)
    assert run_batch([inp], tmp_path / "a", workers=1, formats=("csv", "json")).exit_code == 0
    res = run_batch([inp], tmp_path / "b", workers=2, formats=("csv", "json"))
    assert res.exit_code == 0 and res.n_done == 3
    assert _manifest(tmp_path / "b")["parameters"]["threads_per_worker"] == threads_per_worker(2)
    assert data_files(tmp_path / "a") == data_files(tmp_path / "b")
    assert len(csv_files(tmp_path / "a")) == 6


@pytest.mark.skipif(not sys.stderr, reason="no stderr")
def test_progress_bar_keeps_error_lines_whole(tmp_path, capsys):
    inp = tmp_path / "in"
    make_dataset(inp, 2)
    (inp / "bad.dcm").write_text("nope")
    rc = main(["detect", str(inp), "--out", str(tmp_path / "o"), "--workers", "1", "--progress"])
    err = capsys.readouterr().err
    assert rc != 0
    (line,) = [ln for ln in err.replace("\r", "\n").splitlines() if "bad.dcm" in ln]
    assert line.startswith("napari-calc: ") and line.endswith("(format not recognised)")
    assert "img/s" in err or "it/s" in err or "3/3" in err  # the bar was drawn


def test_settings_key_covers_what_changes_outputs(monkeypatch):
    import napari_calc.core.batch as b
    from napari_calc.core.detect import DetectionParams

    base = dict(params={}, formats=["csv"], spacing_mm=None, deidentify=False)
    k = b.settings_key(**base)
    assert b.settings_key(**{**base, "params": {"threshold": DetectionParams().threshold}}) == k
    assert b.settings_key(**{**base, "formats": ["json", "csv"]}) != k
    assert b.settings_key(**{**base, "formats": ["csv", "json"]}) == b.settings_key(**{**base, "formats": ["json"]})
    assert b.settings_key(**{**base, "spacing_mm": 0.07}) != k
    assert b.settings_key(**{**base, "deidentify": True}) != k
    assert b.settings_key(**{**base, "params": {"threshold": 9.0}}) != k
    monkeypatch.setattr(b, "_model_digest", lambda: "another model")
    assert b.settings_key(**base) != k



def report_safe_path(task):
    """Whether the worker's interpreter keeps the current directory off sys.path."""
    return {"path": task["path"], "stem": task["stem"], "status": "done", "safe_path": bool(sys.flags.safe_path)}


def test_forkserver_workers_do_not_search_the_current_directory(tmp_path):
    # multiprocessing starts its fork server as "python -c ...", which puts
    # the current directory first on its sys.path, and Python 3.11's server
    # imports the preloaded modules with that path: run from a source
    # checkout next to an installed (non-editable) copy, the workers got the
    # checkout, without its compiled kernel, and every image failed.
    # LocalPool starts the server in safe-path mode (PYTHONSAFEPATH=1).
    # (With an editable install, as in this test suite, the checkout is the
    # installed copy, so only the mode itself can be checked here.)
    pool = LocalPool(1, report_safe_path, context="forkserver")
    (res,) = list(pool.map_unordered([{"path": str(tmp_path / "x.tif"), "stem": "x"}]))
    assert res["status"] == "done", res
    assert res["safe_path"] is True
    assert "PYTHONSAFEPATH" not in os.environ or os.environ["PYTHONSAFEPATH"] == _SAFEPATH_BEFORE


def test_an_unwritable_output_folder_is_one_line(tmp_path, capsys, monkeypatch):
    """Checked once before any image (chmod does not stop root, so the probe
    is made to fail): one line naming the folder, no per-image errors and no
    claim of a manifest."""
    from napari_calc.core import batch

    inp = tmp_path / "in"
    make_dataset(inp, 2)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(batch.tempfile, "NamedTemporaryFile", denied)
    assert main(["detect", str(inp), "--out", str(tmp_path / "o")]) != 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"napari-calc: {tmp_path / 'o'}: cannot write in the output folder "
                                "(Permission denied)"]
    assert "manifest" not in out
    monkeypatch.undo()
    assert main(["detect", str(inp), "--out", str(tmp_path / "o")]) == 0
    assert not [n for n in os.listdir(tmp_path / "o") if n.startswith(".napari-calc-probe")]


def test_summary_counts_candidates_and_those_at_the_operating_point(tmp_path, capsys):
    import pandas as pd

    inp, out = tmp_path / "in", tmp_path / "o"
    make_dataset(inp, 2)
    assert main(["detect", str(inp), "--out", str(out), "--param", "min_score=0.7"]) == 0
    calcs = pd.concat([pd.read_csv(p) for p in sorted(out.glob("*.calcifications.csv"))])
    clus = pd.concat([pd.read_csv(p) for p in sorted(out.glob("*.clusters.csv"))])
    want = (f"{len(calcs)} candidates ({int((calcs.score >= 0.7).sum())} with score >= 0.7), "
            f"{len(clus)} clusters ({int((clus.score >= 0.7).sum())} with score >= 0.7)")
    assert 0 < (calcs.score >= 0.7).sum() < len(calcs)  # the two counts differ here
    assert want in capsys.readouterr().out
    totals = json.loads((out / MANIFEST_NAME).read_text())["totals"]
    assert totals["calcifications_at_min_score"] == int((calcs.score >= 0.7).sum())
    # a rerun skips both inputs and reports the same counts from their markers
    assert main(["detect", str(inp), "--out", str(out), "--param", "min_score=0.7"]) == 0
    assert want in capsys.readouterr().out


def test_summary_says_one_image_one_candidate_one_cluster():
    """It said "1 candidates" and "1 clusters" (and "of 1 inputs" when stopped)."""
    from napari_calc.core.batch import BatchResult

    r = BatchResult(records=[], n_done=1, n_calcifications=1, n_clusters=1, n_likely=1,
                    n_likely_clusters=0, manifest=Path("m.json"))
    assert r.summary_lines()[0].startswith(
        "1 image: 1 done, 0 failed; 1 candidate (1 with score >= 0.5), 1 cluster (0 with score >= 0.5);")
    r = BatchResult(records=[], n_done=2, n_calcifications=0, n_clusters=2, n_likely=None,
                    n_likely_clusters=None, manifest=Path("m.json"))
    assert r.summary_lines()[0].startswith("2 images: 2 done, 0 failed; 0 candidates, 2 clusters;")
