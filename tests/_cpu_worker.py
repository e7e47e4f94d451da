"""Run the kernel's instruction-set dispatch sites and save what they return.

``python tests/_cpu_worker.py --inputs IN.npz`` makes the images
(``make_inputs``); ``python tests/_cpu_worker.py IN.npz OUT.npz`` calls
``napari_calc.detect`` and the kernel functions whose C picks an
AVX-512, AVX2 or plain path on the CPU it runs on
(``__builtin_cpu_supports``, ``target_clones``), at 1 and 2 threads, on
those images, and saves every result array in ``OUT.npz``. test_kernel_cpus.py runs it natively
and under ``qemu-x86_64 -cpu MODEL`` (a CPU without AVX-512, or without
AVX) and compares the files. The inputs are small so that an emulated
run takes seconds.
"""

from __future__ import annotations

import sys

import numpy as np


def _tables(prefix, det, out):
    for name in ("calcifications", "clusters"):
        table = getattr(det, name)
        for col in table.columns:
            values = table[col].to_numpy()
            if values.dtype.kind in "biuf":
                out[f"{prefix}/{name}/{col}"] = values


def make_inputs(path) -> None:
    """The worker's images, made once natively: made under emulation, the
    phantom itself would differ (NumPy's SIMD ``exp`` and friends have
    other last bits without AVX2)."""
    from napari_calc.core.phantom import make_phantom

    u16 = make_phantom(0, spacing_mm=0.1, size_mm=(40.0, 33.0)).image.pixels  # 400 x 330
    assert u16.dtype == np.uint16
    noisy = np.random.default_rng(7).normal(1000, 40, (97, 131)).astype(np.float32)
    np.savez(path, u16=u16, noisy=noisy)


def run_all(inputs) -> dict[str, np.ndarray]:
    import napari_calc
    from napari_calc import _kernel

    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__

    # what the CPU (or the emulated one) offers, as NumPy read it
    out: dict[str, np.ndarray] = {f"cpu/{f}": np.array(bool(__cpu_features__.get(f)))
                                  for f in ("AVX2", "FMA3", "AVX512F", "AVX512_SKX")}
    with np.load(inputs) as data:
        u16, noisy = data["u16"], data["noisy"]
    f32 = u16.astype(np.float32) * np.float32(1 / 65535)
    stack = np.stack([u16[:200, :160], u16[100:300, 120:280], u16[200:, 170:]])
    mask = np.zeros(noisy.shape, np.uint8)
    mask[5:90, 3:120] = 1

    for nt in (1, 2):
        _tables(f"t{nt}/u16", napari_calc.detect(u16, 0.1, n_threads=nt), out)
        _tables(f"t{nt}/f32", napari_calc.detect(f32, 0.1, n_threads=nt), out)
        _tables(f"t{nt}/stack", napari_calc.detect(stack, (1.0, 0.1, 0.1), n_threads=nt), out)
        _tables(f"t{nt}/film", napari_calc.detect(u16[::2, ::2].copy(), 0.2, n_threads=nt), out)

        sig = [0.8, 1.28, 2.05, 3.28]
        out[f"t{nt}/gauss"] = _kernel.gaussian(u16, 2.5, 4.0, nt)
        resp, scale = _kernel.dog_response(f32, sig, 4.0, nt)
        out[f"t{nt}/dog"], out[f"t{nt}/dog_scale"] = resp, scale
        out[f"t{nt}/mad"] = np.array([_kernel.mad_noise(noisy, mask, s) for s in (1, 2, 3)])
        out[f"t{nt}/mad_nomask"] = np.array([_kernel.mad_noise(noisy, None, s) for s in (1, 2)])
        out[f"t{nt}/tile"] = np.asarray(_kernel.tile_noise(noisy, 16, mask, 8, nt))
        rows = np.array([40, 41, 200, 3, 396, 150], np.int32)
        cols = np.array([50, 51, 160, 2, 325, 20], np.int32)
        for dt, img in (("u16", u16), ("f32", f32)):
            # sigma 0.9: a window of 9 columns (AVX2 sums); 2.5 and up: 21 or
            # more (AVX-512 for uint16 where the CPU has it)
            for s in (0.9, 2.5, 6.0, 9.0):
                sg = np.full(len(rows), s, np.float32)
                out[f"t{nt}/hess/{dt}/{s}"] = np.asarray(_kernel.local_hessian(img, rows, cols, sg, 4.0, nt))
            out[f"t{nt}/feat/{dt}"] = np.asarray(
                _kernel.candidate_features(img, rows, cols, np.full(len(rows), 2.0, np.float32), nt))
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--inputs":
        make_inputs(sys.argv[2])
    else:
        np.savez(sys.argv[2], **run_all(sys.argv[1]))
