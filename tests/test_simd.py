"""The register-tile operations of fastff.kernels.cpu.simd, one at a time, against NumPy."""
import numpy as np
import pytest
from numba import njit

from fastff.kernels.cpu import simd
from fastff.kernels.cpu.simd import (rows_rank_k, tile_coefs, tile_grad_update, tile_hsum_store,
                                     tile_lanes, tile_update, tile_zeros)

DTYPES = [np.float32, np.float64]


@njit
def _panel(s, x, W, i, j, n, vecs):
    if vecs == 1:
        rows_rank_k(s, x, W, i, j, n, 3, 4, 1)
    else:
        rows_rank_k(s, x, W, i, j, n, 3, 4, 2)


@njit
def _backward(x, delta, W, gx, lr, i, nv, want_gx):
    two = tile_zeros(W, 4, 2)
    c = tile_coefs(two, x, i, nv, lr)
    acc = two
    lanes = tile_lanes(two)
    for j in range(0, W.shape[1], lanes):
        if want_gx:
            acc = tile_grad_update(acc, delta, W, i, nv, j, W.shape[1] - j, c)
        else:
            tile_update(delta, W, i, nv, j, W.shape[1] - j, c)
    if want_gx:
        tile_hsum_store(acc, gx, i, nv)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("vecs", [1, 2])
@pytest.mark.parametrize("n", [None, 1, 5, "lanes", "lanes + 3"])
def test_panel_adds_its_rows_of_W_into_the_valid_columns_only(dtype, vecs, n):
    # s[:3, j:j+vecs*lanes] += x[:3, i:i+4] @ W[i:i+4, j:j+vecs*lanes], masked to n columns;
    # nothing else changes
    rng = np.random.default_rng(3)
    lanes = simd.LANES[np.dtype(dtype).name]
    n = {"lanes": lanes, "lanes + 3": lanes + 3}.get(n, n)
    i, j = 5, lanes
    x = rng.standard_normal((5, 11)).astype(dtype)
    W = rng.standard_normal((11, 4 * lanes)).astype(dtype)
    s = rng.standard_normal((5, 4 * lanes)).astype(dtype)
    s0 = s.copy()
    _panel(s, x, W, i, j, n, vecs)
    cols = vecs * lanes if n is None else min(n, vecs * lanes)
    expect = s0.copy()
    expect[:3, j:j + cols] += x[:3, i:i + 4] @ W[i:i + 4, j:j + cols]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(s, expect, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nv", [1, 2])
@pytest.mark.parametrize("want_gx", [True, False])
def test_backward_tile_matches_numpy_and_leaves_other_rows_alone(dtype, nv, want_gx):
    rng = np.random.default_rng(4)
    lanes = simd.LANES[np.dtype(dtype).name]
    n_out = 2 * lanes + 3  # two full vectors and a masked tail
    x = rng.standard_normal((4, 7)).astype(dtype)
    delta = rng.standard_normal((4, n_out)).astype(dtype)
    W = rng.standard_normal((7, n_out)).astype(dtype)
    gx = np.full((4, 7), -5.0, dtype)
    W1 = W.copy()
    _backward(x, delta, W1, gx, dtype(0.1), 5, nv, want_gx)
    rows = slice(5, 5 + nv)
    expect_W = W.copy()
    expect_W[rows] -= 0.1 * x[:, rows].T @ delta
    expect_gx = np.full_like(gx, -5.0)
    if want_gx:
        expect_gx[:, rows] = delta @ W[rows].T  # with the old W
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(W1, expect_W, rtol=tol, atol=tol)
    np.testing.assert_allclose(gx, expect_gx, rtol=tol, atol=tol)


def test_tile_shape_must_be_a_compile_time_constant():
    @njit
    def runtime_rows(W, k):
        return tile_zeros(W, k, 1)

    with pytest.raises(Exception, match="tile_zeros"):
        runtime_rows(np.ones((2, 2), np.float32), 3)
