"""`napari-calc demo`: the main job on the built-in sample."""

import subprocess
import sys

import pandas as pd

from napari_calc.core.columns import CALC_COLUMNS, CLUSTER_COLUMNS


def test_demo_writes_the_interface_files(tmp_path):
    r = subprocess.run([sys.executable, "-m", "napari_calc", "demo", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    calcs = pd.read_csv(tmp_path / "sample-mammogram.calcifications.csv")
    clusters = pd.read_csv(tmp_path / "sample-mammogram.clusters.csv")
    assert list(calcs.columns) == CALC_COLUMNS and len(calcs) > 0
    assert list(clusters.columns) == CLUSTER_COLUMNS and len(clusters) > 0
    assert str(tmp_path.resolve()) in r.stdout  # says where the outputs are
    assert (tmp_path / "sample-mammogram.mrk.json").exists()


def test_closed_pipe_is_not_a_traceback(tmp_path):
    """`napari-calc demo | head -1` must not end in a BrokenPipeError traceback."""
    p = subprocess.Popen([sys.executable, "-m", "napari_calc", "demo", "--out", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    p.stdout.close()  # the reader goes away
    err = p.stderr.read()
    p.wait(timeout=300)
    assert first.startswith("sample:")
    assert "Traceback" not in err


def _demo(*args):
    return subprocess.run([sys.executable, "-m", "napari_calc", "demo", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_a_second_demo_keeps_a_table_reviewed_since(tmp_path):
    """Run twice, the demo overwrote the table an annotator had reviewed."""
    assert _demo("--out", tmp_path).returncode == 0
    table = tmp_path / "sample-mammogram.calcifications.csv"
    reviewed = pd.read_csv(table)
    reviewed.loc[0, "status"] = "accepted"
    reviewed.to_csv(table, index=False)
    r = _demo("--out", tmp_path)
    assert r.returncode == 0, r.stderr
    kept = tmp_path / "sample-mammogram.calcifications.csv.bak"
    assert pd.read_csv(kept).loc[0, "status"] == "accepted"
    assert f"{table} holds a review: kept as {kept.name}" in r.stderr
    assert (pd.read_csv(table).status == "candidate").all()  # the fresh run


def test_a_second_demo_keeps_a_truth_edited_since(tmp_path):
    """The demo rewrote the sample's truth file, a correction by hand lost."""
    assert _demo("--out", tmp_path).returncode == 0
    truth = tmp_path / "sample-mammogram.truth.json"
    edited = truth.read_text().replace('"view": "CC"', '"view": "MLO"', 1)
    assert edited != truth.read_text()
    truth.write_text(edited)
    r = _demo("--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"{truth} edited since it was written: kept as {truth.name}.bak" in r.stderr
    assert (tmp_path / f"{truth.name}.bak").read_text() == edited
    assert '"view": "CC"' in truth.read_text()


def test_demo_and_phantom_bad_arguments_are_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    for args, says in ((["--out", afile], f"{afile}: not a folder"),
                       (["--out", afile / "sub"], f"{afile / 'sub'}: Not a directory"),
                       (["--out", tmp_path / "d", "--seed", "-1"], "--seed: must be 0 or more, got -1")):
        r = _demo(*args)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    r = subprocess.run([sys.executable, "-m", "napari_calc", "phantom", str(tmp_path / "p"), "--seed", "-3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--seed: must be 0 or more" in r.stderr
