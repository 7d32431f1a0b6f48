// dense_forward: h = f(x @ W + b) with the layer statistics, in two launches.
//
// 1. dense_forward_partial: split-K products parts[s] = x[:, K slice s] @ W[K slice s, :]
//    (fastff::gemm_partial_tile): a batch of 10 rows is one row tile, so the K splits are what
//    spread a 1000 x 1000 layer over every SM.
// 2. dense_forward_epilogue: one thread per output column j sums the splits in order (the same
//    bits for any launch), adds b[j], applies f and counts the column's statistics while the
//    values are in registers; the histogram is counted in shared memory and added to the global
//    one with integer atomics (exact in any order).

template <typename T>
__global__ void __launch_bounds__((FASTFF_TN / 4) * (FASTFF_TM / 2))
dense_forward_partial(const T* __restrict__ x, const T* __restrict__ W, T* __restrict__ parts,
                      int B, int K, int N, int chunk) {
  fastff::gemm_partial_tile<T, false>(x, W, parts, B, K, N, chunk);
}

template <typename T, int ACT>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
dense_forward_epilogue(const T* __restrict__ parts, int splits, const T* __restrict__ b,
                       T* __restrict__ out, int B, int N, int want_stats, T low, T high,
                       long long* __restrict__ sat_low, long long* __restrict__ sat_high,
                       double* __restrict__ total, double* __restrict__ total_sq,
                       unsigned long long* __restrict__ hist, int bins, double hist_lo,
                       double hist_scale, long long* __restrict__ rows) {
  FASTFF_SHARED(unsigned int, local, FASTFF_MAX_BINS);
  if (want_stats)
    for (int i = threadIdx.x; i < bins; i += blockDim.x) local[i] = 0u;
  __syncthreads();
  const int stride = gridDim.x * blockDim.x;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < N; j += stride) {
    const T bias = b[j];
    long long lo_count = 0, hi_count = 0;
    double sum = 0.0, sum_sq = 0.0;
    for (int r = 0; r < B; ++r) {
      T s = parts[(size_t)r * N + j];
      for (int p = 1; p < splits; ++p) s += parts[((size_t)p * B + r) * N + j];
      const T h = fastff::activate<ACT>(s + bias);
      out[(size_t)r * N + j] = h;
      if (want_stats) {
        lo_count += h <= low;
        hi_count += h >= high;
        const double v = double(h);
        sum += v;
        sum_sq += v * v;
        const int bin = fastff::hist_bin(v, hist_lo, hist_scale, bins);
        if (bin >= 0) atomicAdd(&local[bin], 1u);
      }
    }
    if (want_stats) {  // one thread owns column j: no race, and a fixed order
      sat_low[j] += lo_count;
      sat_high[j] += hi_count;
      total[j] += sum;
      total_sq[j] += sum_sq;
    }
  }
  __syncthreads();
  if (want_stats) {
    for (int i = threadIdx.x; i < bins; i += blockDim.x)
      if (local[i]) atomicAdd(&hist[i], (unsigned long long)local[i]);
    if (blockIdx.x == 0 && threadIdx.x == 0) rows[0] += B;
  }
}
