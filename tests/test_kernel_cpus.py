"""The extension as built runs on x86-64 CPUs with fewer instruction sets.

The kernel picks AVX-512, AVX2 or plain code paths on the CPU it runs on
(``target_clones`` at load time; ``__builtin_cpu_supports`` in
csrc/hessian.c, noise.c and nms.c at run time). test_kernel_clones.py
checks that the paths compute the same bits, but on builds with the
AVX-512 paths compiled out, so it cannot see a wrong choice in the shipped
extension. One did ship: hessian.c took ``__builtin_cpu_supports("avx2")``,
which returns the feature's bit (1024), for 1, and chose its AVX-512 path
on every CPU with AVX2 and without AVX-512, where ``detect`` died with
SIGILL (found on an AMD EPYC, 2026-12-07).

Here ``tests/_cpu_worker.py`` runs ``detect`` and the kernel's dispatching
functions in the shipped extension natively and under ``qemu-x86_64``
(Debian's qemu-user; skipped without it) emulating

- a CPU with AVX2 and FMA and without AVX-512,
- a Nehalem (SSE4.2, no AVX),

and every result of the kernel, and every column of ``detect``'s tables
but the scores, must have the native run's bits (the plain, AVX2 and
AVX-512 paths compute the same bits). The scores must be within a few
units in the last place: NumPy computes their ``log`` and ``tanh`` with
other SIMD code on each CPU.

The images are made natively and handed to every run: the phantom made
under emulation would itself differ in its last bits, for the same reason.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from _background import BACKGROUND, job

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_cpu_worker.py")
QEMU = shutil.which("qemu-x86_64")

#: emulated CPUs: AVX2 + FMA without AVX-512; SSE4.2 without AVX
CPUS = {"avx2": "max,-avx512f", "sse4": "Nehalem"}

pytestmark = [
    pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.machine() == "x86_64"),
                       reason="x86-64 Linux only"),
    pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 (Debian's qemu-user) is not installed"),
]


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


@job("cpu_results", timeout=600)
def _run_on_every_cpu(folder: Path, run):
    """``{"native" | "avx2" | "sse4": {name: array}}``: the images made
    natively, then the three runs side by side (one core each). A
    background job (_background.py); None where the tests are skipped."""
    if not (sys.platform.startswith("linux") and platform.machine() == "x86_64") or QEMU is None:
        return None
    inputs = folder / "inputs.npz"
    made = run([sys.executable, WORKER, "--inputs", inputs], env=_env())
    assert made.returncode == 0, f"making the inputs: exit {made.returncode}\n{made.stderr[-3000:]}"
    jobs = {"native": []} | {name: [QEMU, "-cpu", model] for name, model in CPUS.items()}
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        runs = {name: pool.submit(run, [*prefix, sys.executable, WORKER, inputs, folder / f"{name}.npz"],
                                  env=_env())
                for name, prefix in jobs.items()}
        done = {name: fut.result() for name, fut in runs.items()}
    out = {}
    for name, res in done.items():
        # SIGILL is -4 natively and under qemu-user
        assert res.returncode == 0, f"{name}: exit {res.returncode}\n{res.stderr[-3000:]}"
        with np.load(folder / f"{name}.npz") as data:
            out[name] = {k: data[k] for k in data.files}
    return out


@pytest.fixture(scope="module")
def cpu_results():
    """``_run_on_every_cpu``'s result."""
    return BACKGROUND.result("cpu_results")


def _bits(a):
    return a.view(np.uint8) if a.dtype.kind == "f" else a


def test_emulated_cpus_are_what_they_should_be(cpu_results):
    assert cpu_results["avx2"]["cpu/AVX2"] and cpu_results["avx2"]["cpu/FMA3"]
    assert not cpu_results["avx2"]["cpu/AVX512F"]
    assert not cpu_results["sse4"]["cpu/AVX2"] and not cpu_results["sse4"]["cpu/AVX512F"]


@pytest.mark.parametrize("cpu", list(CPUS))
def test_every_result_has_the_native_bits(cpu_results, cpu):
    nat, emu = cpu_results["native"], cpu_results[cpu]
    assert nat.keys() == emu.keys()
    names = [k for k in nat if not k.startswith("cpu/")]
    assert len(names) > 150 and "t1/hess/u16/9.0" in names
    assert len(nat["t1/u16/calcifications/row"]) > 10 and len(nat["t1/u16/clusters/row"]) >= 1
    scores = [k for k in names if k.endswith("/score")]
    assert len(scores) == 16  # (calcifications, clusters) x 4 images x 2 thread counts
    differ = [k for k in names if k not in scores
              and (nat[k].shape != emu[k].shape or not np.array_equal(_bits(nat[k]), _bits(emu[k])))]
    assert differ == []
    for k in scores:  # probabilities in [0, 1]: a few units in the last place of 1
        np.testing.assert_allclose(emu[k], nat[k], rtol=0, atol=1e-14, err_msg=k)


def test_thread_counts_agree_on_every_cpu(cpu_results):
    for cpu, res in cpu_results.items():
        one = [k for k in res if k.startswith("t1/")]
        assert len(one) > 75 and len(one) == sum(k.startswith("t2/") for k in res)
        for k in one:
            assert np.array_equal(_bits(res[k]), _bits(res["t2/" + k[3:]])), (cpu, k)
