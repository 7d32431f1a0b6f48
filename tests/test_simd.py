"""The register-tile operations of fastff.kernels.cpu.simd, one at a time, against NumPy."""
import numpy as np
import pytest
from numba import njit

from fastff.kernels.cpu import simd
from fastff.kernels.cpu.simd import (rows_rank_k, tile_coefs, tile_grad_update, tile_hsum_store,
                                     tile_lanes, tile_update, tile_zeros)

DTYPES = [np.float32, np.float64]


@njit
def _panel(s, x, W, i, nv, j, n):
    rows_rank_k(s, x, W, i, nv, j, n, 3, 4)


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
@pytest.mark.parametrize("nv, n", [(None, None), (4, 1), (3, 5), (1, 8), (2, None)])
def test_panel_adds_only_its_rows_of_W_into_the_valid_columns(dtype, nv, n):
    # s[:3, j:j+lanes] += x[:3, i:i+nv] @ W[i:i+nv, j:j+lanes], masked to n columns; nothing else
    rng = np.random.default_rng(3)
    lanes = simd.LANES[np.dtype(dtype).name]
    i, j = 5, lanes
    x = rng.standard_normal((5, 11)).astype(dtype)
    W = rng.standard_normal((11, 3 * lanes)).astype(dtype)
    s = rng.standard_normal((5, 3 * lanes)).astype(dtype)
    s0 = s.copy()
    if n is None and nv is not None:  # nv with all lanes: the masked form's arguments
        n = lanes
    _panel(s, x, W, i, nv, j, n)
    rows_used = 4 if nv is None else nv
    cols = lanes if n is None else min(n, lanes)
    expect = s0.copy()
    expect[:3, j:j + cols] += x[:3, i:i + rows_used] @ W[i:i + rows_used, j:j + cols]
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
