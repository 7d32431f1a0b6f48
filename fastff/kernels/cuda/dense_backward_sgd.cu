// dense_backward_sgd: delta = grad_h * f'(h); dC/dx = delta @ W^T with the old W; then
// W -= lr * x^T @ delta and b -= lr * delta.sum(0), with the statistics of delta and of dC/dW.
// Launched in this order on one stream, so dC/dx always reads the old W:
//
// 1. dense_backward_delta: one thread per column j: delta, the bias update, the sums of delta
//    (delta_columns, shared with dense_backward_second_order.cu).
// 2. grad_x_partial (split over N) and sum_parts: dC/dx, its splits added in a fixed order.
// 3. dense_backward_update: each block owns a UT x UT tile of W, forms its dC/dW entries over
//    the whole batch and applies them (update_tile, shared with dense_backward_second_order.cu).

// One thread per column j: delta = grad_h * f'(h), the bias step and the sums of delta; with
// RATES (dense_backward_second_order) also q = curv_h f'(h)^2 (diag_hessian) or delta^2, and
// the bias's per-parameter rate step of fastff::rate_step instead of SGD's.
template <typename T, int ACT, bool RATES>
__device__ __forceinline__ void delta_columns(const T* __restrict__ grad_h, const T* __restrict__ h,
                                              const T* __restrict__ curv_h, T* __restrict__ delta,
                                              T* __restrict__ q, T* __restrict__ b,
                                              T* __restrict__ avg_b, T lr, int hessian,
                                              T damping, T keep, T corr, int B, int N,
                                              int want_stats, double* __restrict__ d_total,
                                              double* __restrict__ d_total_sq,
                                              long long* __restrict__ counts) {
  const int stride = gridDim.x * blockDim.x;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < N; j += stride) {
    T colsum = T(0), s = T(0);
    double sum = 0.0, sum_sq = 0.0;
    for (int r = 0; r < B; ++r) {
      const size_t e = (size_t)r * N + j;
      const T slope = fastff::derivative<ACT>(h[e]);
      const T d = grad_h[e] * slope;
      delta[e] = d;
      colsum += d;
      if (RATES) {
        const T qv = hessian ? curv_h[e] * slope * slope : d * d;
        q[e] = qv;
        s += qv;
      }
      sum += double(d);
      sum_sq += double(d) * double(d);
    }
    if (RATES)
      fastff::rate_step(b[j], avg_b[j], colsum, s, lr, hessian, damping, keep, corr, B);
    else
      b[j] -= lr * colsum;
    if (want_stats) {
      d_total[j] += sum;
      d_total_sq[j] += sum_sq;
    }
  }
  if (want_stats && blockIdx.x == 0 && threadIdx.x == 0) {
    counts[0] += B;  // rows
    counts[1] += 1;  // steps
  }
}

template <typename T, int ACT>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
dense_backward_delta(const T* __restrict__ grad_h, const T* __restrict__ h, T* __restrict__ delta,
                     T* __restrict__ b, T lr, int B, int N, int want_stats,
                     double* __restrict__ d_total, double* __restrict__ d_total_sq,
                     long long* __restrict__ counts) {
  delta_columns<T, ACT, false>(grad_h, h, nullptr, delta, nullptr, b, nullptr, lr, 0, T(0), T(0),
                               T(0), B, N, want_stats, d_total, d_total_sq, counts);
}

template <typename T>
__global__ void __launch_bounds__((FASTFF_TN / 4) * (FASTFF_TM / 2))
grad_x_partial(const T* __restrict__ delta, const T* __restrict__ W, T* __restrict__ parts,
               int B, int K, int N, int chunk) {
  // parts[s] = delta[:, N slice s] @ W[:, N slice s]^T: W (K, N) read as the transposed operand
  fastff::gemm_partial_tile<T, true>(delta, W, parts, B, N, K, chunk);
}

template <typename T>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
sum_parts(const T* __restrict__ parts, int splits, T* __restrict__ out, long long count) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += stride) {
    T s = parts[e];
    for (int p = 1; p < splits; ++p) s += parts[(size_t)p * count + e];
    out[e] = s;
  }
}

// One UT x UT tile of W per block: its entries of g = x^T delta over the whole batch, applied
// as W -= lr g; with RATES (dense_backward_second_order) also s = (x^2)^T q and the
// per-parameter rate step of fastff::rate_step. Per-block sums of g (and of its squares) go to
// gw_parts, which reduce_grad_w adds up in block order (deterministic).
template <typename T, bool RATES>
__device__ __forceinline__ void update_tile(const T* __restrict__ x, const T* __restrict__ delta,
                                            const T* __restrict__ q, T* __restrict__ W,
                                            T* __restrict__ avg, T lr, int hessian, T damping,
                                            T keep, T corr, int B, int K, int N, int want_gw,
                                            double* __restrict__ gw_parts) {
  FASTFF_SHARED(T, xs, FASTFF_TK * FASTFF_UT);  // xs[r][i] = x[r, i0 + i]
  FASTFF_SHARED(T, ds, FASTFF_TK * FASTFF_UT);  // ds[r][j] = delta[r, j0 + j]
  FASTFF_SHARED(T, qs, RATES ? FASTFF_TK * FASTFF_UT : 1);  // qs[r][j] = q[r, j0 + j]
  FASTFF_SHARED(double, scratch, (FASTFF_UT / 4) * (FASTFF_UT / 4));
  const int side = FASTFF_UT / 4;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * side + tx, threads = side * side;
  const int i0 = blockIdx.y * FASTFF_UT, j0 = blockIdx.x * FASTFF_UT;
  T acc[4][4], acc_sq[4][4];  // acc_sq: RATES only (dropped by the compiler otherwise)
  for (int a = 0; a < 4; ++a)
    for (int c = 0; c < 4; ++c) acc[a][c] = acc_sq[a][c] = T(0);
  for (int rt = 0; rt < B; rt += FASTFF_TK) {
    for (int e = tid; e < FASTFF_TK * FASTFF_UT; e += threads) {
      const int r = e / FASTFF_UT, k = e % FASTFF_UT, gr = rt + r;
      xs[e] = (gr < B && i0 + k < K) ? x[(size_t)gr * K + i0 + k] : T(0);
      ds[e] = (gr < B && j0 + k < N) ? delta[(size_t)gr * N + j0 + k] : T(0);
      if (RATES) qs[e] = (gr < B && j0 + k < N) ? q[(size_t)gr * N + j0 + k] : T(0);
    }
    __syncthreads();
    for (int r = 0; r < FASTFF_TK; ++r)
      for (int a = 0; a < 4; ++a) {
        const T xv = xs[r * FASTFF_UT + ty + side * a];
        for (int c = 0; c < 4; ++c) {
          acc[a][c] += xv * ds[r * FASTFF_UT + tx + side * c];
          if (RATES) acc_sq[a][c] += (xv * xv) * qs[r * FASTFF_UT + tx + side * c];
        }
      }
    __syncthreads();
  }
  double g_sum = 0.0, g_sq = 0.0;
  for (int a = 0; a < 4; ++a) {
    const int i = i0 + ty + side * a;
    for (int c = 0; c < 4; ++c) {
      const int j = j0 + tx + side * c;
      if (i < K && j < N) {  // this block is the only writer of W[i, j]
        const size_t e = (size_t)i * N + j;
        if (RATES)
          fastff::rate_step(W[e], avg[e], acc[a][c], acc_sq[a][c], lr, hessian,
                            damping, keep, corr, B);
        else
          W[e] -= lr * acc[a][c];
        g_sum += double(acc[a][c]);
        g_sq += double(acc[a][c]) * double(acc[a][c]);
      }
    }
  }
  if (want_gw) {
    const double s = fastff::block_sum(g_sum, scratch, tid, threads);
    const double q2 = fastff::block_sum(g_sq, scratch, tid, threads);
    if (tid == 0) {
      const int block = blockIdx.y * gridDim.x + blockIdx.x;
      gw_parts[2 * block] = s;
      gw_parts[2 * block + 1] = q2;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__((FASTFF_UT / 4) * (FASTFF_UT / 4))
dense_backward_update(const T* __restrict__ x, const T* __restrict__ delta, T* __restrict__ W,
                      T lr, int B, int K, int N, int want_gw, double* __restrict__ gw_parts) {
  update_tile<T, false>(x, delta, nullptr, W, nullptr, lr, 0, T(0), T(0), T(0), B, K, N, want_gw,
                        gw_parts);
}

__global__ void __launch_bounds__(32)
reduce_grad_w(const double* __restrict__ gw_parts, int blocks, double* __restrict__ grad_w_total,
              double* __restrict__ grad_w_total_sq) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {  // block order: the same sum on every launch
    double s = 0.0, q = 0.0;
    for (int k = 0; k < blocks; ++k) {
      s += gw_parts[2 * k];
      q += gw_parts[2 * k + 1];
    }
    grad_w_total[0] += s;
    grad_w_total_sq[0] += q;
  }
}
