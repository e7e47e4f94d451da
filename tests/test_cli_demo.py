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
