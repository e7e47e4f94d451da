"""``benchmarks/speed.py`` still runs: its quick mode (small images, one
repeat, no stack, no scikit-image) end to end in a child process, the
figures it writes, and the results it checks for 1 and 2 threads.

No speed is asserted here: the targets are judged on the full-size run
(docs/performance.md), never in the test suite.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_speed_benchmark_quick_run(tmp_path):
    out = tmp_path / "speed.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--no-stack",
                          "--no-skimage", "--repeats", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    fig = json.loads(out.read_text())
    for key in ("big.copy", "big.detect", "big.cv", "big.detect1", "big.detect2", "mid.detect",
                "big.detect1_alt", "big.detect2_alt", "ratio:big: detect / OpenCV bare DoG",
                "ratio:detect speed-up 1 -> 2 threads", "ratio:detect speed-up 1 -> 2 threads, alternating calls"):
        assert fig[key] > 0, key
    assert fig["identical_1_2_threads"] is True
    assert fig["n_calcifications"] > 0
    # (NaN only where the child may not reset its peak RSS: /proc/self/clear_refs)
    bpp = fig["big.bytes_per_pixel"]
    assert bpp > 0 or (math.isnan(bpp) and not Path("/proc/self/clear_refs").exists())
    assert fig["big.faults_per_call"] >= 0
    assert "minor page faults per detect call" in res.stdout
    # the CPU and its widest vector instructions, in the header and the figures
    assert f"# CPU: {fig['cpu']}\n" in res.stdout
    if Path("/proc/cpuinfo").exists() and "flags" in Path("/proc/cpuinfo").read_text():
        assert fig["cpu"].endswith(("AVX-512", "AVX2, no AVX-512", "no AVX2")), fig["cpu"]


def test_interleaved_timing_settles_each_function():
    """``timeit_interleaved(..., settle=True)`` (the thread counts) runs
    each function once untimed right before each timed run, the functions
    in turn round by round; without it, each runs once a round."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("speed_bench", ROOT / "benchmarks" / "speed.py")
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    for settle, per_round in ((True, ["a", "a", "b", "b"]), (False, ["a", "b"])):
        seen = []
        got = speed.timeit_interleaved({"a": lambda: seen.append("a"), "b": lambda: seen.append("b")}, 3,
                                       settle=settle)
        assert seen == ["a", "b"] + per_round * 3, seen   # (the warm-up round first)
        assert set(got) == {"a", "b"} and all(len(v[1]) == 3 for v in got.values())


def test_ab_kernel_runs_two_builds_side_by_side():
    """``benchmarks/ab_kernel.py`` loads two extension files at once (here
    the same build twice) and times detect, and one kernel alone, with
    each in turn; a missing file is one clear line."""
    import napari_calc._kernel as kern

    script = str(ROOT / "benchmarks" / "ab_kernel.py")
    so = kern.__file__
    small = ["--shape", "400", "320", "--spacing", "0.1", "--seed", "3", "--rounds", "2", "--threads", "1", "2"]
    for extra in ([], ["--kernel", "noise_nms"], ["--kernel", "dog_octaves"], ["--kernel", "dog_noise_nms"]):
        res = subprocess.run([sys.executable, script, so, so, *small, *extra],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        what = extra[1] if extra else "detect"
        for nt in (1, 2):
            assert f"{what} threads={nt}: A median" in res.stdout, res.stdout
        assert "A - B paired median" in res.stdout
        # the same build twice: the same tables (the kernel alone: not compared)
        assert ("# tables: identical with both builds" in res.stdout) == (not extra), res.stdout
    res = subprocess.run([sys.executable, script, so, str(ROOT / "no-such.so")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "no-such.so: no such file" in res.stderr and "Traceback" not in res.stderr


def _ab_against_stand_in(path, source, shape):
    """``benchmarks/ab_kernel.py`` with this build as A and, as B, the
    Python stand-in ``source`` written to ``path`` (one round, 1 thread)."""
    import napari_calc._kernel as kern

    path.write_text(source)
    script = str(ROOT / "benchmarks" / "ab_kernel.py")
    return subprocess.run([sys.executable, script, kern.__file__, str(path), "--shape", str(shape[0]),
                           str(shape[1]), "--spacing", "0.1", "--rounds", "1", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)


def test_ab_kernel_says_when_the_builds_give_other_tables(tmp_path):
    """A second build whose results differ (here a stand-in that puts no
    calcification in a cluster) is timed all the same, and the output
    says first which table differs."""
    res = _ab_against_stand_in(
        tmp_path / "no_clusters.py",
        "import numpy as np\n"
        "from napari_calc._kernel import *  # noqa: F401,F403\n"
        "def radius_clusters(pos, radius, min_size, nthreads=0):\n"
        "    return np.full(len(pos), -1, dtype=np.int64)\n",
        shape=(1200, 960))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "# tables DIFFER at 1 thread(s): calcifications:" in res.stdout, res.stdout
    assert "cluster_id" in res.stdout
    assert "detect threads=1: A median" in res.stdout


def test_ab_kernel_refuses_a_build_of_another_interface(tmp_path):
    """A build whose functions do not take what this checkout's detect
    passes (here a stand-in whose noise_nms and dog_noise_nms have no
    ``top``, as the builds before it) is one line naming the file, not a
    traceback."""
    old = tmp_path / "old_kernel.py"
    res = _ab_against_stand_in(
        old,
        "from napari_calc._kernel import *  # noqa: F401,F403\n"
        "from napari_calc import _kernel as _k\n"
        "def noise_nms(resp, tile, mask=None, min_count=16, k=3.0, radius=1, nthreads=0, values=False,\n"
        "              blocks=None):\n"
        "    return _k.noise_nms(resp, tile, mask, min_count, k, radius, nthreads, values, blocks)\n"
        "def dog_noise_nms(img, sigmas, truncate, split_sigma, max_levels, nthreads, out, ranges, tile,\n"
        "                  mask=None, min_count=16, k=3.0, radius=1, blocks=None):\n"
        "    return _k.dog_noise_nms(img, sigmas, truncate, split_sigma, max_levels, nthreads, out, ranges,\n"
        "                            tile, mask, min_count, k, radius, blocks=blocks)\n",
        shape=(400, 320))
    assert res.returncode != 0
    assert f"{old}: this build does not offer" in res.stderr and "'top'" in res.stderr
    assert "Traceback" not in res.stderr
