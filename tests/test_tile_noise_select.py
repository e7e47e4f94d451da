"""Tile noise on data that stress the exact selection's brackets: the
sample bracket and the interpolated narrowing only decide how fast, so every
tile must still be exactly numpy's lower-median MAD, in the extension (AVX2
where the CPU has it) and in the serial SSE2 build."""

from __future__ import annotations

import math

import numpy as np
import pytest

from test_kernel_reference import kern, ref_mad  # noqa: F401  (fixture, reference)

from napari_calc import _kernel


def _hard_images():
    rng = np.random.default_rng(41)
    shape = (192, 256)
    n = shape[0] * shape[1]
    # distinct floats one ulp apart around the median: the narrowing runs out
    # of floats between its ends
    ulp = (np.float32(1.0) + rng.integers(-40, 41, n).astype(np.float32) * np.float32(2.0 ** -23))
    # two far clusters, the median at the edge of one: interpolation overshoots
    gap = np.where(rng.random(n) < 0.5, rng.normal(0, 1e-6, n), rng.normal(1e6, 1, n)).astype(np.float32)
    # values crowded at the median and many deviations equal to the MAD
    crowd = np.where(rng.random(n) < 0.45, 1.0, rng.choice([0.0, 2.0, 0.5, 1.5, 1e6, -1e6], n))
    crowd = crowd.astype(np.float32)
    # deviations that overflow float32 (|x - median| = inf: -3e38 - 1e38) in
    # the finite path
    huge = rng.choice(np.array([-3.0e38, 1.0e38, 3.0e38], np.float32), n, p=[0.4, 0.2, 0.4])
    # a heavy tail over many decades (the sample bracket's bisection)
    decades = (np.sign(rng.normal(size=n)) * 10.0 ** rng.uniform(-30, 30, n)).astype(np.float32)
    return [a.reshape(shape) for a in (ulp, gap, crowd, huge, decades)]


@pytest.mark.parametrize("tile", [48, 64, 100])
def test_tile_noise_exact_on_hard_data(kern, tile):  # noqa: F811
    mask = (np.random.default_rng(42).random((192, 256)) > 0.2).astype(np.uint8)
    for x in _hard_images():
        for m in (None, mask):
            grid = kern.tile_noise(x, tile, m, 16, 0)
            for i in range(grid.shape[0]):
                for j in range(grid.shape[1]):
                    blk = x[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile]
                    if m is not None:
                        blk = blk[m[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile] != 0]
                    blk = blk.ravel()
                    if len(blk) < 16:
                        assert math.isnan(grid[i, j])
                    else:
                        with np.errstate(over="ignore"):
                            ref = np.float32(ref_mad(blk))
                        assert grid[i, j].view(np.uint32) == ref.view(np.uint32), (i, j)
        with np.errstate(over="ignore"):
            ref = ref_mad(x.ravel())
        assert kern.mad_noise(x, None, 1) == ref


@pytest.mark.parametrize("tile", [1, 5, 15, 16, 17, 31, 32, 33, 40, 86])
def test_tile_noise_mask_runs(kern, tile):  # noqa: F811
    """Rows of a tile wholly inside or outside the mask are found 16 bytes at
    a time (the last 16 overlapping): a single masked-out or masked-in byte
    at every column of the tile, any nonzero value, in a pitched crop, must
    give numpy's lower-median MAD of exactly the masked pixels."""
    rng = np.random.default_rng(tile)
    w = tile + 3  # a partial tile at the right edge
    rows = 2 * w
    x = rng.normal(size=(rows, w)).astype(np.float32)
    m = np.zeros((rows, w), np.uint8)
    for r in range(rows):
        c = r % w
        if (r // w) % 2 == 0:
            m[r, :] = rng.integers(1, 256)  # full row but one hole
            m[r, c] = 0
        else:
            m[r, c] = rng.integers(1, 256)  # empty row but one pixel
    m[-1, :] = 200  # a full row
    big = np.zeros((rows + 2, w + 21), np.uint8)
    big[1:-1, 7:7 + w] = m
    # the extension reads the crop with its row pitch (ncalc_tile_noise_ld);
    # the serial wrapper calls ncalc_tile_noise, which needs a contiguous mask
    mv = big[1:-1, 7:7 + w] if kern is _kernel else m
    for nt in (1, 2):
        grid = kern.tile_noise(x, tile, mv, 2, nt)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                sl = np.s_[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile]
                blk = x[sl][m[sl] != 0]
                if len(blk) < 2:
                    assert math.isnan(grid[i, j])
                else:
                    ref = np.float32(ref_mad(blk))
                    assert grid[i, j].view(np.uint32) == ref.view(np.uint32), (tile, i, j)
