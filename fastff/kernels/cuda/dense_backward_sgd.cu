// dense_backward_sgd: delta = grad_h * f'(h); dC/dx = delta @ W^T with the old W; then
// W -= lr * x^T @ delta and b -= lr * delta.sum(0), with the statistics of delta and of dC/dW.
// The learning rate is read from the device (lr[0]), so that a step captured in a CUDA graph
// serves any rate.
// Three launches in this order on one stream, so dC/dx always reads the old W:
//
// 1. dense_backward_delta: blocks of FASTFF_THREADS columns by FASTFF_DR rows form delta and
//    their column sums; the last row block of a column block (fastff::last_to_arrive) adds
//    those in row-block order and applies the bias update and the sums of delta.
// 2. grad_x_fused (split over N): dC/dx, the last block of each tile adding its splits in split
//    order (one split writes dC/dx directly). In a model's backward pass it also takes the
//    layer below's step 1 (delta_epilogue): the layer below then skips its own.
// 3. dense_backward_update: each block owns a UT x UT tile of W, forms its dC/dW entries over
//    the whole batch and applies them (update_tile, shared with
//    dense_backward_second_order.cu); the last block adds the blocks' dC/dW sums in block order.
//
// A model's pass (fused_pass.backward_layers) also runs two jobs in one launch where they touch
// different layers: grad_x_and_update (a layer's dC/dx beside the update of the layer above)
// and two_updates (the last two layers' updates). A job finds its tile in a fastff::Tile, its
// own grid's, not the launch's.

// delta = grad_h f'(h) at entry e, written, and added to its column's sums; returns f'(h).
template <typename T, int ACT>
__device__ __forceinline__ T delta_entry(const T* __restrict__ grad_h, const T* __restrict__ h,
                                         T* __restrict__ delta, size_t e, T& colsum,
                                         double& sum, double& sum_sq) {
  const T slope = fastff::derivative<ACT>(h[e]);
  const T d = grad_h[e] * slope;
  delta[e] = d;
  colsum += d;
  sum += double(d);
  sum_sq += double(d) * double(d);
  return slope;
}

// Step 1's last part for column j, by the last block of its column to arrive: the ``parts``
// partial sums in col_parts (3 N doubles a part: the column sum as a T, the sum and the sum of
// squares of delta) added in part order, the bias step and the statistics.
template <typename T>
__device__ __forceinline__ void step_bias_from_parts(
    const double* __restrict__ col_parts, int parts, int N, int j, T* __restrict__ b,
    const T* __restrict__ lr, int want_stats, double* __restrict__ d_total,
    double* __restrict__ d_total_sq) {
  T colsum = T(0);
  double sum = 0.0, sum_sq = 0.0;
  for (int t = 0; t < parts; ++t) {  // part order: the same bits on every launch
    const double* part = col_parts + (size_t)t * 3 * N;
    colsum += T(part[j]);
    sum += part[N + j];
    sum_sq += part[2 * N + j];
  }
  b[j] -= lr[0] * colsum;
  if (want_stats) {
    d_total[j] += sum;
    d_total_sq[j] += sum_sq;
  }
}

template <typename T, int ACT>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
dense_backward_delta(const T* __restrict__ grad_h, const T* __restrict__ h, T* __restrict__ delta,
                     T* __restrict__ b, const T* __restrict__ lr, int B, int N,
                     unsigned* __restrict__ counters,
                     double* __restrict__ col_parts, int want_stats,
                     double* __restrict__ d_total, double* __restrict__ d_total_sq,
                     long long* __restrict__ counts) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int r0 = blockIdx.y * FASTFF_DR, r1 = min(B, r0 + FASTFF_DR), row_blocks = gridDim.y;
  if (j < N) {
    T colsum = T(0);
    double sum = 0.0, sum_sq = 0.0;
    for (int r = r0; r < r1; ++r)
      delta_entry<T, ACT>(grad_h, h, delta, (size_t)r * N + j, colsum, sum, sum_sq);
    double* part = col_parts + (size_t)blockIdx.y * 3 * N;
    part[j] = double(colsum);  // exact: a T in a double
    part[N + j] = sum;
    part[2 * N + j] = sum_sq;
  }
  if (!fastff::last_to_arrive(counters + blockIdx.x, row_blocks)) return;
  if (j < N)
    step_bias_from_parts(col_parts, row_blocks, N, j, b, lr, want_stats, d_total, d_total_sq);
  if (want_stats && blockIdx.x == 0 && threadIdx.x == 0) {
    counts[0] += B;  // rows
    counts[1] += 1;  // steps
  }
}

// f'(h) for an activation code known at run time: one compiled dC/dx serves every activation
// of the layer below (fastff::derivative for each).
template <typename T>
__device__ __forceinline__ T derivative_of(int act, T h) {
  switch (act) {
    case fastff::SIGMOID: return fastff::derivative<fastff::SIGMOID>(h);
    case fastff::TANH: return fastff::derivative<fastff::TANH>(h);
    case fastff::SOFTSIGN: return fastff::derivative<fastff::SOFTSIGN>(h);
    case fastff::RELU: return fastff::derivative<fastff::RELU>(h);
    default: return T(1);
  }
}

// The layer below's step 1 in this dC/dx tile's epilogue (grad_x_fused with act >= 0): each
// output's splits added in split order, times f'(h) of the layer below (activation ``act``),
// written to delta_x. Each (column, row group) unit keeps its column sum in T (for the bias
// step) and the sums of delta and of its squares in double (the statistics); a row tile's
// units are added per column in row-group order into col_parts, and the last row tile of a
// column tile to finish adds those in row-tile order, steps the bias b and adds the
// statistics: the same bits on every launch.
template <typename T>
__device__ __forceinline__ void delta_epilogue(
    const T* __restrict__ parts, const T* __restrict__ h, T* __restrict__ delta_x,
    T* __restrict__ b, const T* __restrict__ lr, unsigned* __restrict__ counters,
    double* __restrict__ col_parts, int B, int K, int act, int want_stats,
    double* __restrict__ d_total, double* __restrict__ d_total_sq,
    long long* __restrict__ counts, const fastff::Tile& at) {
  const int tid = threadIdx.y * blockDim.x + threadIdx.x, threads = blockDim.x * blockDim.y;
  const int splits = at.nz, col_tiles = at.nx, row_tiles = at.ny;
  const int r0 = at.y * FASTFF_TM, r1 = min(B, r0 + FASTFF_TM);
  const int c0 = at.x * FASTFF_TN, ncols = min(FASTFF_TN, K - c0);
  const int groups = fastff::row_groups(threads, ncols), units = groups * ncols;
  constexpr int RED = fastff::EPILOGUE_UNITS;
  FASTFF_SHARED(double, red, 3 * RED);  // red[sum][unit]: T column sum, sum, sum of squares
  constexpr int ER = sizeof(T) == 4 ? FASTFF_ER : 1;
  for (int u = tid; u < units; u += threads) {
    const int j = c0 + u % ncols;
    T colsum = T(0);
    double sum = 0.0, sum_sq = 0.0;
    for (int r = r0 + u / ncols; r < r1; r += ER * groups) {
      T s[ER], hv[ER];
      size_t off[ER];
      bool in[ER];
#pragma unroll
      for (int i = 0; i < ER; ++i) {
        in[i] = r + i * groups < r1;
        off[i] = (size_t)(r + i * groups) * K + j;
        hv[i] = in[i] ? h[off[i]] : T(0);  // in flight with the splits' loads
      }
      fastff::add_splits<T, ER>(parts, off, in, splits, (size_t)B * K, s);
#pragma unroll
      for (int i = 0; i < ER; ++i) {
        if (!in[i]) break;
        const T d = s[i] * derivative_of(act, hv[i]);
        delta_x[off[i]] = d;
        colsum += d;
        sum += double(d);
        sum_sq += double(d) * double(d);
      }
    }
    red[u] = double(colsum);  // exact: a T in a double
    red[RED + u] = sum;
    red[2 * RED + u] = sum_sq;
  }
  __syncthreads();
  for (int c = tid; c < ncols; c += threads) {  // row groups in order
    T colsum = T(0);
    double sum = 0.0, sum_sq = 0.0;
    for (int g = 0; g < groups; ++g) {
      colsum += T(red[g * ncols + c]);
      sum += red[RED + g * ncols + c];
      sum_sq += red[2 * RED + g * ncols + c];
    }
    double* part = col_parts + (size_t)at.y * 3 * K;
    part[c0 + c] = double(colsum);
    part[K + c0 + c] = sum;
    part[2 * K + c0 + c] = sum_sq;
  }
  if (!fastff::last_to_arrive(counters + col_tiles * row_tiles + at.x, row_tiles)) return;
  for (int c = tid; c < ncols; c += threads)
    step_bias_from_parts(col_parts, row_tiles, K, c0 + c, b, lr, want_stats, d_total, d_total_sq);
  if (want_stats && at.x == 0 && tid == 0) {
    counts[0] += B;  // rows
    counts[1] += 1;  // steps
  }
}

// dC/dx = delta @ W^T: parts[s] = delta[:, N slice s] @ W[:, N slice s]^T (W (K, N) read as the
// transposed operand), the last block of each tile adding the splits in order into out. With
// one split the product is written into out directly (parts is out). With act >= 0 (the layer
// below's activation code) the epilogue forms the layer below's delta into out instead, and
// steps its bias b, with its statistics (delta_epilogue; parts is then always a scratch).
template <typename T>
__device__ __forceinline__ void grad_x_tile(
    const T* __restrict__ delta, const T* __restrict__ W, T* __restrict__ parts,
    unsigned* __restrict__ counters, T* __restrict__ out, int B, int K, int N, int chunk,
    int products, int act, const T* __restrict__ h, T* __restrict__ b, const T* __restrict__ lr,
    double* __restrict__ col_parts, int want_stats, double* __restrict__ d_total,
    double* __restrict__ d_total_sq, long long* __restrict__ counts, const fastff::Tile& at,
    T* as, T* bs) {
  fastff::gemm_tile<T, true>(delta, W, parts, B, N, K, chunk, products, at, as, bs);
  const int splits = at.nz;
  if (act >= 0) {
    if (fastff::last_to_arrive(counters + at.y * at.nx + at.x, splits))
      delta_epilogue<T>(parts, h, out, b, lr, counters, col_parts, B, K, act, want_stats,
                        d_total, d_total_sq, counts, at);
    return;
  }
  if (splits == 1) return;
  if (!fastff::last_to_arrive(counters + at.y * at.nx + at.x, splits)) return;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x, threads = blockDim.x * blockDim.y;
  const int r0 = at.y * FASTFF_TM, c0 = at.x * FASTFF_TN;
  // outputs whose splits are added together (fastff::add_splits; one in double)
  constexpr int ER = sizeof(T) == 4 ? FASTFF_ER : 1;
  for (int e0 = tid; e0 < FASTFF_TM * FASTFF_TN; e0 += ER * threads) {
    T s[ER];
    size_t off[ER];
    bool in[ER];
#pragma unroll
    for (int i = 0; i < ER; ++i) {
      const int e = e0 + i * threads, r = r0 + e / FASTFF_TN, c = c0 + e % FASTFF_TN;
      in[i] = e < FASTFF_TM * FASTFF_TN && r < B && c < K;
      off[i] = (size_t)r * K + c;
    }
    fastff::add_splits<T, ER>(parts, off, in, splits, (size_t)B * K, s);
#pragma unroll
    for (int i = 0; i < ER; ++i)
      if (in[i]) out[off[i]] = s[i];
  }
}

// A launch of dC/dx alone: its grid is dC/dx's (column tiles, row tiles, splits).
template <typename T>
__global__ void __launch_bounds__((FASTFF_TN / 4) * (FASTFF_TM / 4), FASTFF_MIN_BLOCKS)
grad_x_fused(const T* __restrict__ delta, const T* __restrict__ W, T* __restrict__ parts,
             unsigned* __restrict__ counters, T* __restrict__ out, int B, int K, int N,
             int chunk, int products, int act, const T* __restrict__ h, T* __restrict__ b,
             const T* __restrict__ lr, double* __restrict__ col_parts, int want_stats,
             double* __restrict__ d_total, double* __restrict__ d_total_sq,
             long long* __restrict__ counts) {
  GEMM_SHARED(T, as, bs);
  grad_x_tile<T>(delta, W, parts, counters, out, B, K, N, chunk, products, act, h, b, lr,
                 col_parts, want_stats, d_total, d_total_sq, counts, fastff::Tile::of_launch(),
                 as, bs);
}

// One UT x UT tile of W per block: its entries of g = x^T delta over the whole batch, applied
// as W -= lr g; with RATES (dense_backward_second_order) also s = (x^2)^T q and the
// per-parameter rate step of fastff::rate_step. Per-block sums of g (and of its squares) go to
// gw_parts, which the last block to finish adds up in block order into grad_w_total and
// grad_w_total_sq (deterministic). With MODE 3xTF32 (plain SGD, float32) the products run on
// tensor cores: each warp forms a 32 x 16 corner of the tile (fastff::warp_slice_mma, A = x^T
// read from xs, B = delta from ds, both staged in fragment order: fastff::stage_tensor);
// otherwise each thread forms 4 x 4 entries.
// Rows of the staged slices are padded by four words, as the GEMM's are (fastff::GEMM_AS).
constexpr int UPDATE_PITCH = FASTFF_UT + 4, UPDATE_THREADS = (FASTFF_UT / 4) * (FASTFF_UT / 4);

// One slice of the update's operands into shared memory, from a thread's G groups of 4
// columns (update_tile's vx, vd, vq): as rows of 4 values on CUDA cores (xs[r][i], ds[r][j],
// qs[r][j]), in fragment order on tensor cores (fastff::stage_tensor: A = x^T with entry
// (k = r, row i), B = delta with (k = r, column j)).
template <typename T, bool RATES, int MODE, int G>
__device__ __forceinline__ void stage_update_slice(const T (&vx)[G][4], const T (&vd)[G][4],
                                                   const T (&vq)[RATES ? G : 1][4], int tid,
                                                   int threads, T* xs, T* ds, T* qs) {
  constexpr int P = UPDATE_PITCH;
#pragma unroll
  for (int u = 0; u < G; ++u) {
    const int g = tid + u * threads, r = g / (FASTFF_UT / 4), i = 4 * (g % (FASTFF_UT / 4));
    if (g >= FASTFF_TK * FASTFF_UT / 4) continue;
    if constexpr (MODE != fastff::PRODUCTS_FP32) {
      for (int c = 0; c < 4; ++c) {
        fastff::stage_tensor<MODE, FASTFF_UT>(
            xs, fastff::a_frag_index<FASTFF_UT>(r, i + c), vx[u][c]);
        fastff::stage_tensor<MODE, FASTFF_UT>(
            ds, fastff::b_frag_index<FASTFF_UT>(r, i + c), vd[u][c]);
      }
    } else {
      fastff::store4(xs + r * P + i, vx[u]);
      fastff::store4(ds + r * P + i, vd[u]);
      if (RATES) fastff::store4(qs + r * P + i, vq[RATES ? u : 0]);
    }
  }
}

// A staged slice's products into a thread's entries of g (acc) and, with RATES, of s
// (acc_sq): on CUDA cores its 4 x 4 entries from 16-byte loads of 4 rows (ty) and 4 columns
// (tx); on tensor cores its warp's corner (fastff::warp_slice_mma).
template <typename T, bool RATES, int MODE>
__device__ __forceinline__ void update_products(const T* xs, const T* ds, const T* qs, int tx,
                                                int ty, int wm, int wn, int lane,
                                                T (&acc)[4][4], T (&acc_sq)[4][4]) {
  constexpr int P = UPDATE_PITCH;
  if constexpr (MODE != fastff::PRODUCTS_FP32) {
    fastff::warp_slice_mma<MODE, FASTFF_UT, FASTFF_UT>(xs, ds, wm, wn, lane, acc);
  } else {
    for (int r = 0; r < FASTFF_TK; ++r) {
      T xv[4], dv[4], qv[4];
      fastff::load4(xs + r * P + 4 * ty, xv);
      fastff::load4(ds + r * P + 4 * tx, dv);
      if (RATES) fastff::load4(qs + r * P + 4 * tx, qv);
      for (int a = 0; a < 4; ++a)
        for (int c = 0; c < 4; ++c) {
          acc[a][c] += xv[a] * dv[c];
          if (RATES) acc_sq[a][c] += (xv[a] * xv[a]) * qv[c];
        }
    }
  }
}

// A thread's entries of the tile's g (acc; acc_sq: s, with RATES) applied to W (W -= lr g, or
// the per-parameter rate step), their sum and sum of squares added to g_sum and g_sq. On CUDA
// cores the thread's 4 x 4 entries (rows 4 ty, columns 4 tx); on tensor cores its warp
// corner's fragment (wm, wn). The block is the only writer of its tile of W.
template <typename T, bool RATES, int MODE>
__device__ __forceinline__ void apply_update(const T (&acc)[4][4], const T (&acc_sq)[4][4],
                                             T* __restrict__ W, T* __restrict__ avg, T lr,
                                             int hessian, T damping, T keep, T corr, int B,
                                             int K, int N, int i0, int j0, int tx, int ty,
                                             int wm, int wn, int lane, double& g_sum,
                                             double& g_sq) {
#pragma unroll  // acc stays in registers only if every index is a constant
  for (int a = 0; a < 4; ++a) {
    if constexpr (MODE != fastff::PRODUCTS_FP32) {
      for (int c = 0; c < 4; ++c) {
        const int i = i0 + fastff::fragment_row(wm, lane, a, c);
        const int j = j0 + fastff::fragment_col(wn, lane, a, c);
        if (i < K && j < N) {
          W[(size_t)i * N + j] -= lr * acc[a][c];
          g_sum += double(acc[a][c]);
          g_sq += double(acc[a][c]) * double(acc[a][c]);
        }
      }
      continue;
    }
    const int i = i0 + 4 * ty + a;
    // this block is the only writer of W[i, j]; plain SGD updates 4 columns at once
    const bool whole = !RATES && i < K && j0 + 4 * tx + 3 < N;
    if (whole) fastff::sgd4(W + (size_t)i * N + j0 + 4 * tx, acc[a], lr);
    for (int c = 0; c < 4; ++c) {
      const int j = j0 + 4 * tx + c;
      if (i < K && j < N) {
        const size_t e = (size_t)i * N + j;
        if (RATES)
          fastff::rate_step(W[e], avg[e], acc[a][c], acc_sq[a][c], lr, hessian,
                            damping, keep, corr, B);
        else if (!whole)
          W[e] -= lr * acc[a][c];
        g_sum += double(acc[a][c]);
        g_sq += double(acc[a][c]) * double(acc[a][c]);
      }
    }
  }
}

// The block's sums of g and of its squares into gw_parts; the last block to finish adds them
// up in block order into grad_w_total and grad_w_total_sq (the same sum on every launch).
__device__ __forceinline__ void add_grad_w_sums(double g_sum, double g_sq, double* scratch,
                                                int tid, int threads,
                                                double* __restrict__ gw_parts,
                                                unsigned* __restrict__ counter,
                                                double* __restrict__ grad_w_total,
                                                double* __restrict__ grad_w_total_sq,
                                                const fastff::Tile& at) {
  const double s = fastff::block_sum(g_sum, scratch, tid, threads);
  const double q2 = fastff::block_sum(g_sq, scratch, tid, threads);
  if (tid == 0) {
    const int block = at.y * at.nx + at.x;
    gw_parts[2 * block] = s;
    gw_parts[2 * block + 1] = q2;
  }
  const int blocks = at.nx * at.ny;
  if (fastff::last_to_arrive(counter, blocks) && tid == 0) {
    double total = 0.0, total_sq = 0.0;  // block order: the same sum on every launch
    for (int k = 0; k < blocks; ++k) {
      total += gw_parts[2 * k];
      total_sq += gw_parts[2 * k + 1];
    }
    grad_w_total[0] += total;
    grad_w_total_sq[0] += total_sq;
  }
}

// The update's shared memory, declared by its kernel (UPDATE_SHARED) so that one set serves
// every instance of update_tile it runs: xs[r][i] = x[r, i0 + i], ds[r][j] = delta[r, j0 + j]
// (two planes, big and small parts, in 3xTF32), qs[r][j] = q[r, j0 + j] (the rates only), and
// the block sums' scratch.
template <typename T>
struct UpdateShared {
  T *xs, *ds, *qs;
  double* scratch;
};
#define UPDATE_SHARED(T, name, planes, rates)                                      \
  FASTFF_SHARED(T, name##_xs, FASTFF_TK * UPDATE_PITCH * (planes));               \
  FASTFF_SHARED(T, name##_ds, FASTFF_TK * UPDATE_PITCH * (planes));               \
  FASTFF_SHARED(T, name##_qs, (rates) ? FASTFF_TK * UPDATE_PITCH : 1);            \
  FASTFF_SHARED(double, name##_scratch, (FASTFF_UT / 4) * (FASTFF_UT / 4));        \
  const UpdateShared<T> name{name##_xs, name##_ds, name##_qs, name##_scratch}

template <typename T, bool RATES, int MODE>
__device__ __forceinline__ void update_tile(const T* __restrict__ x, const T* __restrict__ delta,
                                            const T* __restrict__ q, T* __restrict__ W,
                                            T* __restrict__ avg, T lr, int hessian, T damping,
                                            T keep, T corr, int B, int K, int N, int want_gw,
                                            double* __restrict__ gw_parts,
                                            unsigned* __restrict__ counter,
                                            double* __restrict__ grad_w_total,
                                            double* __restrict__ grad_w_total_sq,
                                            const UpdateShared<T>& sh, const fastff::Tile& at) {
  constexpr int P = UPDATE_PITCH;
  constexpr bool TC = MODE != fastff::PRODUCTS_FP32;
  static_assert(!(TC && RATES), "the rates' update runs on CUDA cores");
  T *xs = sh.xs, *ds = sh.ds, *qs = sh.qs;
  const int side = FASTFF_UT / 4;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * side + tx, threads = side * side;
  const int i0 = at.y * FASTFF_UT, j0 = at.x * FASTFF_UT;
  const int lane = tid % 32, warp = tid / 32;  // tensor cores: the warp's corner (wm, wn)
  const int wm = fastff::warp_row0(warp, FASTFF_UT), wn = fastff::warp_col0(warp, FASTFF_UT);
  T acc[4][4], acc_sq[4][4];  // acc_sq: RATES only (dropped by the compiler otherwise)
  for (int a = 0; a < 4; ++a)
    for (int c = 0; c < 4; ++c) acc[a][c] = acc_sq[a][c] = T(0);
  // a TK-row slice of x, delta (and q) on its way from global to shared memory: the next
  // slice's loads are in flight during this slice's products (double buffering in registers).
  // A thread's share is groups of 4 consecutive columns of a row, one 16-byte load each where
  // the rows are a multiple of 4 long and the arrays 16-byte aligned (fastff::load_group).
  constexpr int G = (FASTFF_TK * FASTFF_UT / 4 + UPDATE_THREADS - 1) / UPDATE_THREADS;
  const bool vec = K % 4 == 0 && N % 4 == 0 &&
                   ((reinterpret_cast<unsigned long long>(x) |
                     reinterpret_cast<unsigned long long>(delta) |
                     reinterpret_cast<unsigned long long>(RATES ? q : delta)) & 15) == 0;
  T vx[G][4], vd[G][4], vq[RATES ? G : 1][4];
  // group u: row g / (UT / 4) of a slice, columns 4 (g % (UT / 4)) on of the tile's, at
  // addresses set once and moved a slice (TK rows) at a time, not found anew each slice
  const T* x_at[G];
  const T* d_at[G];
#pragma unroll
  for (int u = 0; u < G; ++u) {
    const int g = tid + u * threads, r = g / (FASTFF_UT / 4), k = 4 * (g % (FASTFF_UT / 4));
    x_at[u] = x + (size_t)r * K + i0 + k;
    d_at[u] = delta + (size_t)r * N + j0 + k;
  }
  auto load = [&](int rt) {
#pragma unroll
    for (int u = 0; u < G; ++u) {
      const int g = tid + u * threads, gr = rt + g / (FASTFF_UT / 4);
      const int k = 4 * (g % (FASTFF_UT / 4));
      const bool row = g < FASTFF_TK * FASTFF_UT / 4 && gr < B;
      fastff::load_group(vec, x_at[u], row ? K - i0 - k : 0, vx[u]);
      fastff::load_group(vec, d_at[u], row ? N - j0 - k : 0, vd[u]);
      if (RATES)  // q's rows are delta's: the same offset
        fastff::load_group(vec, q + (d_at[u] - delta), row ? N - j0 - k : 0, vq[RATES ? u : 0]);
      x_at[u] += (size_t)FASTFF_TK * K;
      d_at[u] += (size_t)FASTFF_TK * N;
    }
  };
  if (B > 0) load(0);
  for (int rt = 0; rt < B; rt += FASTFF_TK) {
    stage_update_slice<T, RATES, MODE, G>(vx, vd, vq, tid, threads, xs, ds, qs);
    __syncthreads();
    if (rt + FASTFF_TK < B) load(rt + FASTFF_TK);
    update_products<T, RATES, MODE>(xs, ds, qs, tx, ty, wm, wn, lane, acc, acc_sq);
    __syncthreads();
  }
  double g_sum = 0.0, g_sq = 0.0;
  apply_update<T, RATES, MODE>(acc, acc_sq, W, avg, lr, hessian, damping, keep, corr, B, K, N,
                               i0, j0, tx, ty, wm, wn, lane, g_sum, g_sq);
  if (want_gw)
    add_grad_w_sums(g_sum, g_sq, sh.scratch, tid, threads, gw_parts, counter, grad_w_total,
                    grad_w_total_sq, at);
}

// Plain SGD's update of one tile of W (update_tile), its products as ``products`` says: in
// 3xTF32 on tensor cores (float32 only, staged in ``tensor_sh``), on CUDA cores otherwise
// (in ``cores_sh``). A kernel of this job alone gives each its own set: the CUDA-core loop
// sharing the tensor cores' set was scheduled with fewer shared loads ahead (a chain of 732
// cycles an iteration in sm_90's SASS, 527 in its own; benchmarks/sass.py).
template <typename T>
__device__ __forceinline__ void sgd_update(const T* __restrict__ x, const T* __restrict__ delta,
                                           T* __restrict__ W, const T* __restrict__ lr, int B,
                                           int K, int N, int products, int want_gw,
                                           double* __restrict__ gw_parts,
                                           unsigned* __restrict__ counter,
                                           double* __restrict__ grad_w_total,
                                           double* __restrict__ grad_w_total_sq,
                                           const UpdateShared<T>& tensor_sh,
                                           const UpdateShared<T>& cores_sh,
                                           const fastff::Tile& at) {
  constexpr bool tc = fastff::Tf32Able<T>::value;  // float32 only on tensor cores
  if (tc && products == fastff::PRODUCTS_3XTF32)
    update_tile<T, false, tc ? fastff::PRODUCTS_3XTF32 : 0>(
        x, delta, nullptr, W, nullptr, lr[0], 0, T(0), T(0), T(0), B, K, N, want_gw, gw_parts,
        counter, grad_w_total, grad_w_total_sq, tensor_sh, at);
  else
    update_tile<T, false, fastff::PRODUCTS_FP32>(
        x, delta, nullptr, W, nullptr, lr[0], 0, T(0), T(0), T(0), B, K, N, want_gw, gw_parts,
        counter, grad_w_total, grad_w_total_sq, cores_sh, at);
}

// An update job of W (K x N) in a launch of two jobs: its blocks (a UT x UT tile of W each),
// and block ``b``'s tile, x along N as in dense_backward_update's grid.
__device__ __forceinline__ int update_job_blocks(int K, int N) {
  return ((N + FASTFF_UT - 1) / FASTFF_UT) * ((K + FASTFF_UT - 1) / FASTFF_UT);
}
__device__ __forceinline__ fastff::Tile update_job_tile(int b, int K, int N) {
  return fastff::Tile::of_block(b, (N + FASTFF_UT - 1) / FASTFF_UT,
                                (K + FASTFF_UT - 1) / FASTFF_UT, 1);
}

template <typename T>
__global__ void __launch_bounds__((FASTFF_UT / 4) * (FASTFF_UT / 4))
dense_backward_update(const T* __restrict__ x, const T* __restrict__ delta, T* __restrict__ W,
                      const T* __restrict__ lr, int B, int K, int N, int products,
                      int want_gw, double* __restrict__ gw_parts,
                      unsigned* __restrict__ counter, double* __restrict__ grad_w_total,
                      double* __restrict__ grad_w_total_sq) {
  UPDATE_SHARED(T, tensor_sh, fastff::gemm_planes<T>, false);
  UPDATE_SHARED(T, cores_sh, 1, false);
  sgd_update<T>(x, delta, W, lr, B, K, N, products, want_gw, gw_parts, counter, grad_w_total,
                grad_w_total_sq, tensor_sh, cores_sh, fastff::Tile::of_launch());
}

// A model's backward pass, two jobs in one launch: dC/dx of one layer (grad_x_tile, forming
// the delta of the layer below) and the update of the layer above it (sgd_update, from that
// layer's delta, ready before the launch). They read and write different layers' W, biases
// and deltas, so nothing orders them: each waits on no other, and a pass of L layers takes L
// - 2 launches fewer (fused_pass.backward_layers). Blocks [0, gx_blocks) take dC/dx's tiles in
// its grid (column tiles, row tiles, splits), the rest the update's (up_N / UT, up_K / UT);
// the two jobs' blocks are the same shape (TN = TM = UT). dC/dx's blocks come first, so that
// its tiles' epilogues overlap the update's products.
template <typename T>
__global__ void __launch_bounds__((FASTFF_TN / 4) * (FASTFF_TM / 4), FASTFF_MIN_BLOCKS)
grad_x_and_update(const T* __restrict__ delta, const T* __restrict__ W, T* __restrict__ parts,
                  unsigned* __restrict__ counters, T* __restrict__ out, int B, int K, int N,
                  int chunk, int products, int act, const T* __restrict__ h, T* __restrict__ b,
                  const T* __restrict__ lr, double* __restrict__ col_parts, int want_stats,
                  double* __restrict__ d_total, double* __restrict__ d_total_sq,
                  long long* __restrict__ counts, const T* __restrict__ up_x,
                  const T* __restrict__ up_delta, T* __restrict__ up_W, int up_K, int up_N,
                  int up_products, int up_want_gw, double* __restrict__ up_gw_parts,
                  unsigned* __restrict__ up_counter, double* __restrict__ up_grad_w_total,
                  double* __restrict__ up_grad_w_total_sq) {
  // launched only where the tiles allow it (fused_pass.pairs_jobs); empty elsewhere
  if constexpr (FASTFF_TM == FASTFF_UT && FASTFF_TN == FASTFF_UT) {
    const int gx = (K + FASTFF_TN - 1) / FASTFF_TN, gy = (B + FASTFF_TM - 1) / FASTFF_TM;
    const int gz = (N + chunk - 1) / chunk, gx_blocks = gx * gy * gz;
    const int block = blockIdx.x;
    // a block runs one job: the update's staged slices are the GEMM's (the same size here)
    GEMM_SHARED(T, as, bs);
    FASTFF_SHARED(double, scratch, (FASTFF_UT / 4) * (FASTFF_UT / 4));
    const UpdateShared<T> sh{as, bs, as, scratch};  // qs: plain SGD reads none (RATES false)
    if (block < gx_blocks)
      grad_x_tile<T>(delta, W, parts, counters, out, B, K, N, chunk, products, act, h, b, lr,
                     col_parts, want_stats, d_total, d_total_sq, counts,
                     fastff::Tile::of_block(block, gx, gy, gz), as, bs);
    else
      sgd_update<T>(up_x, up_delta, up_W, lr, B, up_K, up_N, up_products, up_want_gw,
                    up_gw_parts, up_counter, up_grad_w_total, up_grad_w_total_sq, sh, sh,
                    update_job_tile(block - gx_blocks, up_K, up_N));
  }
}

// A model's last two updates (fused_pass.backward_layers: layers 1 and 0, whose deltas the same
// dC/dx launch formed) in one launch: blocks [0, (N / UT) (K / UT)) update W, the rest up_W,
// each with its own block sums and arrival counter.
template <typename T>
__global__ void __launch_bounds__((FASTFF_UT / 4) * (FASTFF_UT / 4))
two_updates(const T* __restrict__ x, const T* __restrict__ delta, T* __restrict__ W,
            const T* __restrict__ lr, int B, int K, int N, int products, int want_gw,
            double* __restrict__ gw_parts, unsigned* __restrict__ counter,
            double* __restrict__ grad_w_total, double* __restrict__ grad_w_total_sq,
            const T* __restrict__ up_x, const T* __restrict__ up_delta, T* __restrict__ up_W,
            int up_K, int up_N, int up_want_gw, double* __restrict__ up_gw_parts,
            unsigned* __restrict__ up_counter, double* __restrict__ up_grad_w_total,
            double* __restrict__ up_grad_w_total_sq) {
  UPDATE_SHARED(T, sh, fastff::gemm_planes<T>, false);  // a block runs one job
  const int first = update_job_blocks(K, N), block = blockIdx.x;
  if (block < first)
    sgd_update<T>(x, delta, W, lr, B, K, N, products, want_gw, gw_parts, counter, grad_w_total,
                  grad_w_total_sq, sh, sh, update_job_tile(block, K, N));
  else
    sgd_update<T>(up_x, up_delta, up_W, lr, B, up_K, up_N, products, up_want_gw, up_gw_parts,
                  up_counter, up_grad_w_total, up_grad_w_total_sq, sh, sh,
                  update_job_tile(block - first, up_K, up_N));
}
