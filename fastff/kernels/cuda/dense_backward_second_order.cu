// dense_backward_second_order: the SGD pass of dense_backward_sgd.cu with per-parameter rates
// (fastff/kernels/rates.py). Launched in this order on one stream:
//
// 1. second_order_columns: one thread per column j: delta = grad_h f'(h), q = curv_h f'(h)^2
//    (diag_hessian) or delta^2 (grad_variance), the bias's rate step, the sums of delta.
// 2. grad_x_fused on (delta, W): dC/dx with the old W; for diag_hessian the same on (q, W^2)
//    after square_into: the curvature passed down.
// 3. second_order_update: update_tile with RATES, its last block adding the dC/dW statistics.

// One thread per column j: delta = grad_h f'(h) and q = curv_h f'(h)^2 (diag_hessian) or
// delta^2 (grad_variance), the bias's per-parameter rate step (fastff::rate_step) and the sums
// of delta.
template <typename T, int ACT>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
second_order_columns(const T* __restrict__ grad_h, const T* __restrict__ h,
                     const T* __restrict__ curv_h, T* __restrict__ delta, T* __restrict__ q,
                     T* __restrict__ b, T* __restrict__ avg_b, T lr, int hessian, T damping,
                     T keep, T corr, int B, int N, int want_stats, double* __restrict__ d_total,
                     double* __restrict__ d_total_sq, long long* __restrict__ counts) {
  const int stride = gridDim.x * blockDim.x;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < N; j += stride) {
    T colsum = T(0), s = T(0);
    double sum = 0.0, sum_sq = 0.0;
    for (int r = 0; r < B; ++r) {
      const size_t e = (size_t)r * N + j;
      const T slope = delta_entry<T, ACT>(grad_h, h, delta, e, colsum, sum, sum_sq);
      const T qv = hessian ? curv_h[e] * slope * slope : delta[e] * delta[e];
      q[e] = qv;
      s += qv;
    }
    fastff::rate_step(b[j], avg_b[j], colsum, s, lr, hessian, damping, keep, corr, B);
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

template <typename T>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
square_into(const T* __restrict__ a, T* __restrict__ out, long long count) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += stride)
    out[e] = a[e] * a[e];
}

template <typename T>
__global__ void __launch_bounds__((FASTFF_UT / 4) * (FASTFF_UT / 4))
second_order_update(const T* __restrict__ x, const T* __restrict__ delta, const T* __restrict__ q,
                    T* __restrict__ W, T* __restrict__ avg, T lr, int hessian, T damping, T keep,
                    T corr, int B, int K, int N, int want_gw, double* __restrict__ gw_parts,
                    unsigned* __restrict__ counter, double* __restrict__ grad_w_total,
                    double* __restrict__ grad_w_total_sq) {
  UPDATE_SHARED(T, sh, 1, true);
  update_tile<T, true, fastff::PRODUCTS_FP32>(x, delta, q, W, avg, lr, hessian, damping, keep,
                                              corr, B, K, N, want_gw, gw_parts, counter,
                                              grad_w_total, grad_w_total_sq, sh,
                                              fastff::Tile::of_launch());
}
