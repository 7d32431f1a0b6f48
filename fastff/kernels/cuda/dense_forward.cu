// dense_forward: h = f(x @ W + b) with the layer statistics, in one launch.
//
// The grid is (column tiles, row tiles, K splits); each block forms one split's partial product
// of one TM x TN tile (fastff::gemm_tile, on CUDA or tensor cores as ``products`` says): at
// batch 10 a 1000 x 1000 layer is one row tile, and the K splits spread it over every SM. The
// last block to finish a tile (fastff::last_to_arrive) sums its splits in split order (the same
// bits whichever block that is), adds b, applies f, and keeps the tile's statistics per column
// in col_parts; the last row tile of a column tile to finish adds those up in row-tile order
// into the layer's statistics. The histogram is counted in shared memory and added to the
// global one with integer atomics (exact in any order).

// The layer's statistics of column tile blockIdx.x: its row tiles' column sums (col_parts)
// added in row-tile order (the same bits on every launch) into the running totals.
__device__ __forceinline__ void add_row_tiles(const double* __restrict__ col_parts, int N,
                                              int row_tiles, int tid, int threads,
                                              long long* __restrict__ sat_low,
                                              long long* __restrict__ sat_high,
                                              double* __restrict__ total,
                                              double* __restrict__ total_sq) {
  for (int c = tid; c < FASTFF_TN; c += threads) {
    const int j = blockIdx.x * FASTFF_TN + c;
    if (j >= N) continue;
    double lo_count = 0, hi_count = 0, sum = 0.0, sum_sq = 0.0;
    for (int t = 0; t < row_tiles; ++t) {
      const double* part = col_parts + (size_t)t * 4 * N;
      lo_count += part[j];
      hi_count += part[N + j];
      sum += part[2 * N + j];
      sum_sq += part[3 * N + j];
    }
    sat_low[j] += (long long)lo_count;
    sat_high[j] += (long long)hi_count;
    total[j] += sum;
    total_sq[j] += sum_sq;
  }
}

namespace fastff {
// One block's share of dense_forward: its split of a tile's product (in ``as`` and ``bs``,
// GEMM_SHARED's), and where it is the tile's last split, the tile's epilogue (h, this row tile's
// column statistics in col_parts, the histogram). Returns whether it was the last: the block that
// goes on to the column stage (dense_forward_fused's), or to the cost (dense_forward_and_cost).
template <typename T, int ACT>
__device__ __forceinline__ bool forward_tile(
    const T* __restrict__ x, const T* __restrict__ W, T* __restrict__ parts,
    unsigned* __restrict__ counters, double* __restrict__ col_parts, const T* __restrict__ b,
    T* __restrict__ out, int B, int K, int N, int chunk, int products, int want_stats, T low,
    T high, unsigned long long* __restrict__ hist, int bins, double hist_lo, double hist_scale,
    T* as, T* bs) {
  gemm_tile<T, false>(x, W, parts, B, K, N, chunk, products, Tile::of_launch(), as, bs);
  const int splits = gridDim.z, col_tiles = gridDim.x;
  const int tile = blockIdx.y * col_tiles + blockIdx.x;
  if (!last_to_arrive(counters + tile, splits)) return false;
  FASTFF_SHARED(unsigned int, local, FASTFF_MAX_BINS);
  const int tid = threadIdx.y * blockDim.x + threadIdx.x, threads = blockDim.x * blockDim.y;
  if (want_stats)
    for (int i = tid; i < bins; i += threads) local[i] = 0u;
  __syncthreads();
  // The tile's epilogue on every thread, a (column, row group) unit each (fastff::row_groups)
  const int r0 = blockIdx.y * FASTFF_TM, r1 = min(B, r0 + FASTFF_TM);
  const int c0 = blockIdx.x * FASTFF_TN, ncols = min(FASTFF_TN, N - c0);
  const int groups = fastff::row_groups(threads, ncols), units = groups * ncols;
  constexpr int RED = fastff::EPILOGUE_UNITS;
  FASTFF_SHARED(double, red, 4 * RED);  // red[statistic][unit]
  for (int u = tid; u < units; u += threads) {
    const int j = c0 + u % ncols;
    const T bias = b[j];
    double lo_count = 0, hi_count = 0, sum = 0.0, sum_sq = 0.0;
    // rows whose splits are added together (fastff::add_splits; one in double, whose sums
    // leave no registers for more)
    constexpr int ER = sizeof(T) == 4 ? FASTFF_ER : 1;
    for (int r = r0 + u / ncols; r < r1; r += ER * groups) {
      T s[ER];
      size_t at[ER];
      bool in[ER];
#pragma unroll
      for (int i = 0; i < ER; ++i) {
        in[i] = r + i * groups < r1;
        at[i] = (size_t)(r + i * groups) * N + j;
      }
      fastff::add_splits<T, ER>(parts, at, in, splits, (size_t)B * N, s);
#pragma unroll
      for (int i = 0; i < ER; ++i) {
        if (!in[i]) break;
        const T h = fastff::activate<ACT>(s[i] + bias);
        out[at[i]] = h;
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
    }
    if (want_stats) {
      red[u] = lo_count;
      red[RED + u] = hi_count;
      red[2 * RED + u] = sum;
      red[3 * RED + u] = sum_sq;
    }
  }
  if (want_stats) {
    __syncthreads();
    for (int c = tid; c < ncols; c += threads) {  // row groups in order: the same bits always
      double lo_count = 0, hi_count = 0, sum = 0.0, sum_sq = 0.0;
      for (int g = 0; g < groups; ++g) {
        lo_count += red[g * ncols + c];
        hi_count += red[RED + g * ncols + c];
        sum += red[2 * RED + g * ncols + c];
        sum_sq += red[3 * RED + g * ncols + c];
      }
      // this row tile's column statistics, for the last row tile to add up
      double* part = col_parts + (size_t)blockIdx.y * 4 * N;
      const int j = c0 + c;
      part[j] = lo_count;
      part[N + j] = hi_count;
      part[2 * N + j] = sum;
      part[3 * N + j] = sum_sq;
    }
  }
  if (!want_stats) return true;
  __syncthreads();
  for (int i = tid; i < bins; i += threads)
    if (local[i]) atomicAdd(&hist[i], (unsigned long long)local[i]);
  return true;
}
}  // namespace fastff

template <typename T, int ACT>
__global__ void __launch_bounds__((FASTFF_TN / 4) * (FASTFF_TM / 4), FASTFF_MIN_BLOCKS)
dense_forward_fused(const T* __restrict__ x, const T* __restrict__ W, T* __restrict__ parts,
                    unsigned* __restrict__ counters, double* __restrict__ col_parts,
                    const T* __restrict__ b, T* __restrict__ out, int B, int K, int N, int chunk,
                    int products, int want_stats, T low, T high, long long* __restrict__ sat_low,
                    long long* __restrict__ sat_high, double* __restrict__ total,
                    double* __restrict__ total_sq, unsigned long long* __restrict__ hist,
                    int bins, double hist_lo, double hist_scale, long long* __restrict__ rows) {
  GEMM_SHARED(T, as, bs);
  if (!fastff::forward_tile<T, ACT>(x, W, parts, counters, col_parts, b, out, B, K, N, chunk,
                                    products, want_stats, low, high, hist, bins, hist_lo,
                                    hist_scale, as, bs) || !want_stats)
    return;
  const int col_tiles = gridDim.x, row_tiles = gridDim.y;
  if (!fastff::last_to_arrive(counters + col_tiles * row_tiles + blockIdx.x, row_tiles)) return;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x, threads = blockDim.x * blockDim.y;
  add_row_tiles(col_parts, N, row_tiles, tid, threads, sat_low, sat_high, total, total_sq);
  if (blockIdx.x == 0 && tid == 0) rows[0] += B;
}
