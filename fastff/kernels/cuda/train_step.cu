// train_steps: whole SGD steps of an MLP in one persistent launch (small batches).
//
// The layer-by-layer kernels (dense_forward.cu, dense_backward_sgd.cu, softmax_loss.cu) cost
// about 35 launches a step; at batch 10 the launches, not the arithmetic, set the time. Here
// every block of a co-resident (cooperative) grid runs every phase of the step, with a grid
// barrier (fastff::grid_sync) between dependent phases, 2 L per step for L weight layers (the
// launch's last left out where no block reads another's work after it):
//
//   F_l (l = 0 .. L-1)    h_l = f(h_{l-1} W_l + b_l) and its statistics, by column strips of
//                         W_l: each strip's outputs are summed over all of K by one block
//   B_l (l = L-1 .. 0)    by row strips of W_l: dC/dx = delta_l W_l^T with the old W, then
//                         W_l -= lr x^T delta_l; the strip's rows of dC/dx are complete, so the
//                         block turns them into delta_{l-1} = dC/dx f'(h_{l-1}) at once, steps
//                         the bias b_{l-1} and counts the statistics of delta_{l-1}. B_{L-1}
//                         starts from the softmax cost, which every block forms for the batch.
//
// So W is read once by the forward and once (read and written) by the backward of each step.
// The strips are fixed (config.CUDA_STEP_STRIP wide) and dealt to blocks round-robin; every
// output is summed by one block in a fixed order, so the bits do not depend on the grid size,
// the GPU model or the order in which blocks run. The layers come as a table of LayerDesc
// (fastff/kernels/cuda/step.py builds it once per model, batch size and statistics).

namespace fastff {
// One weight layer of the step, as the int64 slots step.py writes (pointers as integers,
// 0 where a statistic is not kept; the four doubles as their bits).
struct LayerDesc {
  long long W, b, h, delta;  // W (K, N), b (N), h: this layer's output (B, N), delta (B, N)
  long long sat_low, sat_high, total, total_sq, hist, rows;  // ForwardStats of h (hidden)
  long long d_total, d_total_sq, counts, gw_total, gw_total_sq;  // BackwardStats (hidden)
  long long gw_parts;  // per-strip sums of dC/dW and its squares (weight_grad)
  long long K, N, bins, unused;
  double low, high, hist_lo, hist_scale;
};

template <typename T>
__device__ __forceinline__ T* ptr(long long p) {
  return reinterpret_cast<T*>(p);
}

// red[g * SL + 0] = the sum of red[g * SL .. g * SL + SL) for every group g < groups, by a fixed
// tree over the SL lanes (the same order on every launch).
template <typename T>
__device__ __forceinline__ void reduce_lanes(T* red, int groups) {
  for (int half = FASTFF_SL / 2; half > 0; half /= 2) {
    for (int e = threadIdx.x; e < groups * half; e += blockDim.x) {
      const int g = e / half, q = e % half;
      red[g * FASTFF_SL + q] += red[g * FASTFF_SL + q + half];
    }
    __syncthreads();
  }
}

// A forward strip's threads: STEP_CG groups of STEP_CPT columns (4: one 16-byte load of W a
// reduction step) by STEP_RG groups of RPT rows, by SL lanes along the reduction; the
// column group varies fastest, so the threads of a row group that read one weight load one
// address. Its input is staged KC columns at a time as xs[k][r], XP a column (the rows padded
// to whole row groups, then by 4: a thread's rows are one 16-byte load, and a quarter warp's
// loads fall in distinct banks).
// PB, a template parameter of the step: the rows it is compiled for, the batch rounded up
// (fastff.kernels.cuda.compiler.step_rows); rows past the batch are staged as exact zeros, so
// the bits do not depend on PB. The chunks (KC, JC) and the buffer (STAGE) are sized for
// FASTFF_PB, the most rows (config.CUDA_STEP_MAX_BATCH), so a smaller PB sums in the same order.
constexpr int STEP_THREADS = FASTFF_ST * FASTFF_SL;
constexpr int STEP_CPT = FASTFF_ST < 4 ? FASTFF_ST : 4;
constexpr int STEP_CG = FASTFF_ST / STEP_CPT, STEP_RG = STEP_CPT;
template <int PB>
struct StepRows {
  static_assert(PB >= 1 && PB <= FASTFF_PB, "PB: at most config.CUDA_STEP_MAX_BATCH rows");
  static constexpr int RPT = (PB + STEP_RG - 1) / STEP_RG;  // a forward thread's rows
  static constexpr int XR = STEP_RG * RPT, XP = XR + 4;  // staged rows, and their pitch
  static_assert(FASTFF_KC % FASTFF_SL == 0 && FASTFF_KC * XP <= FASTFF_STAGE,
                "FASTFF_KC: see geometry.step_chunks");
  static_assert(FASTFF_JC % (4 * FASTFF_SL) == 0 && PB * FASTFF_JC <= FASTFF_STAGE &&
                PB * FASTFF_ST * FASTFF_SL <= FASTFF_STAGE,
                "FASTFF_JC, FASTFF_STAGE: see geometry.step_chunks");
};

// v = p[0 .. C), zero past ``valid`` (> 0) columns: with VEC (C = 4, the row length a
// multiple of 4 and the array aligned, so a group of four is whole wherever it starts inside
// the row) one 16-byte load, one load each otherwise. The strips are compiled once for each
// VEC, so that their hot loops hold one of the two.
template <bool VEC, typename T, int C>
__device__ __forceinline__ void load_cols(const T* p, int valid, T (&v)[C]) {
  if constexpr (VEC && C == 4) {
    load4(p, v);
  } else {
    for (int c = 0; c < C; ++c) v[c] = c < valid ? p[c] : T(0);
  }
}

// p[0 .. 4) = v, the first ``valid`` only, as load_cols.
template <bool VEC, typename T>
__device__ __forceinline__ void store_cols(T* p, int valid, const T (&v)[4]) {
  if constexpr (VEC) {
    store4(p, v);
  } else {
    for (int c = 0; c < 4 && c < valid; ++c) p[c] = v[c];
  }
}

// Whether layer d's rows of W can be read and written 16 bytes at a time (VEC): each row a
// multiple of 4 long and W 16-byte aligned, so a group of four is whole wherever it starts.
__device__ __forceinline__ bool rows_of_four(const LayerDesc& d) {
  return d.N % 4 == 0 && (d.W & 15) == 0;
}

// v = p[0 .. n) from shared memory, 16 bytes a load where n is a multiple of 4.
template <typename T, int n>
__device__ __forceinline__ void load_rows(const T* p, T (&v)[n]) {
  if constexpr (n % 4 == 0) {
    for (int q = 0; q < n / 4; ++q) {
      T four[4];
      load4(p + 4 * q, four);
      for (int e = 0; e < 4; ++e) v[4 * q + e] = four[e];
    }
  } else {
    for (int e = 0; e < n; ++e) v[e] = p[e];
  }
}

// The forward strip's sums (forward_strip): acc[r][c] = sum over k = kg, kg + SL, ... of
// in[r0 + r, k] W[k, j + c], the input staged KC columns at a time in xs. The input column a
// thread stages is loaded a chunk ahead, so that it arrives during the sums of the chunk
// before; in float the chunk's weights are asked for before the staging waits (PER 16-byte
// loads in flight: a chunk ahead too would take the registers of a second set, and spill);
// double has no registers to spare for them and loads each weight as it is used.
// (W, in, dl and x carry no __restrict__, here and in the strips: the launch writes them, the
// backward stepping W and the forward writing h, so no load of them may take the read-only
// path that a proof of no aliasing would allow.)
template <int PB, bool VEC, typename T>
__device__ __forceinline__ void forward_sums(const T* W, const T* in,
                                             T* xs, int K, int N, int B, int j, int r0, int kg,
                                             bool busy,
                                             T (&acc)[StepRows<PB>::RPT][STEP_CPT]) {
  constexpr int CPT = STEP_CPT, RPT = StepRows<PB>::RPT, PER = FASTFF_KC / FASTFF_SL;
  constexpr int XR = StepRows<PB>::XR, XP = StepRows<PB>::XP;
  constexpr bool early = sizeof(T) == 4;
  static_assert(FASTFF_KC <= STEP_THREADS, "a column of a chunk a thread (step_chunks)");
  const int k_own = threadIdx.x;  // the column of each chunk this thread stages
  auto weights = [&](int kc, int i, T (&w)[CPT]) {
    const int k = kc + kg + i * FASTFF_SL;
    if (busy && k < K) load_cols<VEC>(W + (size_t)k * N, N - j, w);
    else for (int c = 0; c < CPT; ++c) w[c] = T(0);
  };
  T v[XR];
  auto inputs = [&](int kc) {  // every load issued before any is used; none past K
    const bool inside = k_own < FASTFF_KC && kc + k_own < K;
    const T* p = in + kc + k_own;
#pragma unroll
    for (int r = 0; r < XR; ++r, p += K) v[r] = (r < B && inside) ? *p : T(0);
  };
  // one chunk: (float) its weights asked for, its inputs into xs and the next chunk's asked
  // for, then its sums
  T w[PER][CPT];
  auto chunk = [&](int kc) {
    if constexpr (early)
#pragma unroll
      for (int i = 0; i < PER; ++i) weights(kc, i, w[i]);
    __syncthreads();  // xs is free: the last chunk's (or strip's) readers are done with it
    if (k_own < FASTFF_KC)
#pragma unroll
      for (int r = 0; r < XR; ++r) xs[k_own * XP + r] = v[r];
    inputs(kc + FASTFF_KC);
    __syncthreads();
    if (!busy) return;
#pragma unroll
    for (int i = 0; i < PER; ++i) {  // past K both the weights and the inputs are zeros
      const int k = kg + i * FASTFF_SL;
      if constexpr (!early) weights(kc, i, w[i]);
      T x[RPT];  // rows past the batch are staged as zero: their sums are never read
      load_rows<T, RPT>(xs + k * XP + r0, x);
      for (int r = 0; r < RPT; ++r)
        for (int c = 0; c < CPT; ++c) acc[r][c] += x[r] * w[i][c];
    }
  };
  inputs(0);
  for (int kc = 0; kc < K; kc += FASTFF_KC) chunk(kc);
}

// F_l for columns [t ST, t ST + ST) of layer d: h = f(in W + b) and, with statistics, the
// columns' saturation counts, sums and the layer histogram. Lane kg of a thread sums rows kg,
// kg + SL, ... of its columns (in that order: the bits of unstaged sums) for its rows of the
// batch (forward_sums); the SL partial sums are then added by reduce_lanes. ``red`` holds
// STAGE elements: the staged input, then the sums.
template <int PB, typename T, int ACT>
__device__ __forceinline__ void forward_strip(const LayerDesc& d, const T* in, int B, int t,
                              bool stats, T* red, unsigned int* local_hist) {
  constexpr int CPT = STEP_CPT, RPT = StepRows<PB>::RPT;
  const int K = int(d.K), N = int(d.N), tid = threadIdx.x;
  const int cg = tid % STEP_CG, rg = tid / STEP_CG % STEP_RG, kg = tid / (STEP_CG * STEP_RG);
  const int c0 = cg * CPT, j = t * FASTFF_ST + c0, r0 = rg * RPT;
  const bool busy = j < N && r0 < B;
  const T* W = ptr<const T>(d.W) + j;
  T acc[RPT][CPT];
  for (int r = 0; r < RPT; ++r)
    for (int c = 0; c < CPT; ++c) acc[r][c] = T(0);
  if (rows_of_four(d))
    forward_sums<PB, true>(W, in, red, K, N, B, j, r0, kg, busy, acc);
  else
    forward_sums<PB, false>(W, in, red, K, N, B, j, r0, kg, busy, acc);
  __syncthreads();  // red is free: every thread is done with xs
  for (int r = 0; r < RPT; ++r)
    for (int c = 0; c < CPT; ++c)
      if (r0 + r < B) red[((r0 + r) * FASTFF_ST + c0 + c) * FASTFF_SL + kg] = acc[r][c];
  __syncthreads();
  reduce_lanes(red, B * FASTFF_ST);
  T* h = ptr<T>(d.h);
  const T* bias = ptr<const T>(d.b);
  for (int e = tid; e < B * FASTFF_ST; e += blockDim.x) {
    const int r = e / FASTFF_ST, cc = e % FASTFF_ST, jj = t * FASTFF_ST + cc;
    if (jj < N) {
      T* slot = red + (r * FASTFF_ST + cc) * FASTFF_SL;
      const T v = activate<ACT>(slot[0] + bias[jj]);
      h[(size_t)r * N + jj] = v;
      slot[0] = v;
      if (stats) {
        const int bin = hist_bin(double(v), d.hist_lo, d.hist_scale, int(d.bins));
        if (bin >= 0) atomicAdd(&local_hist[bin], 1u);
      }
    }
  }
  __syncthreads();
  if (!stats) return;
  const int jj = t * FASTFF_ST + tid;
  if (tid < FASTFF_ST && jj < N) {  // one thread per column: the only writer of its counters
    const T low = T(d.low), high = T(d.high);
    long long lo_count = 0, hi_count = 0;
    double sum = 0.0, sum_sq = 0.0;
    for (int r = 0; r < B; ++r) {
      const T v = red[(r * FASTFF_ST + tid) * FASTFF_SL];
      lo_count += v <= low;
      hi_count += v >= high;
      sum += double(v);
      sum_sq += double(v) * double(v);
    }
    ptr<long long>(d.sat_low)[jj] += lo_count;
    ptr<long long>(d.sat_high)[jj] += hi_count;
    ptr<double>(d.total)[jj] += sum;
    ptr<double>(d.total_sq)[jj] += sum_sq;
  }
  unsigned long long* hist = ptr<unsigned long long>(d.hist);
  for (int i = tid; i < int(d.bins); i += blockDim.x)
    if (local_hist[i]) {  // integer atomics: the same counts in any order
      atomicAdd(&hist[i], (unsigned long long)local_hist[i]);
      local_hist[i] = 0u;
    }
  if (t == 0 && tid == 0) ptr<long long>(d.rows)[0] += B;
  __syncthreads();
}

// The backward strip's main pass (backward_strip) for row i of W: acc[r] = dC/dx[r, i] =
// sum_j delta[r, j] W[i, j] with the old W, then W[i, j] -= rate dC/dW[i, j], and the sums of
// dC/dW and its squares (GW: only where they are kept, so that a step without them issues no
// double arithmetic here); delta staged JC columns at a time in ds[r][j], the columns a thread
// stages loaded a chunk ahead and (float) the chunk's weights before the staging waits, as in
// forward_sums.
template <int PB, bool VEC, bool GW, typename T>
__device__ __forceinline__ void backward_sums(T* Wr, const T* dl, T* ds, int i,
                                              int K, int N, int B, int lane, T rate,
                                              const T* xrow, T (&acc)[PB],
                                              double& g_sum, double& g_sq) {
  constexpr int PER = FASTFF_JC / (4 * FASTFF_SL);
  constexpr int SC = (FASTFF_JC + STEP_THREADS - 1) / STEP_THREADS;  // columns a thread stages
  constexpr bool early = sizeof(T) == 4;
  auto weights = [&](int j, T (&w)[4]) {
    if (i < K && j < N) load_cols<VEC>(Wr + j, N - j, w);
    else for (int c = 0; c < 4; ++c) w[c] = T(0);
  };
  T v[SC][PB];
  auto inputs = [&](int jc) {  // every load issued before any is used; none past N
#pragma unroll
    for (int q = 0; q < SC; ++q) {
      const int j = threadIdx.x + q * STEP_THREADS;
      const bool inside = j < FASTFF_JC && jc + j < N;
      const T* p = dl + jc + j;
#pragma unroll
      for (int r = 0; r < PB; ++r, p += N) v[q][r] = (r < B && inside) ? *p : T(0);
    }
  };
  T w[PER][4];
  auto chunk = [&](int jc) {
    if constexpr (early)
#pragma unroll
      for (int m = 0; m < PER; ++m) weights(jc + 4 * lane + 4 * FASTFF_SL * m, w[m]);
    __syncthreads();  // ds is free
#pragma unroll
    for (int q = 0; q < SC; ++q) {
      const int j = threadIdx.x + q * STEP_THREADS;
      if (j < FASTFF_JC)
#pragma unroll
        for (int r = 0; r < PB; ++r) ds[r * FASTFF_JC + j] = v[q][r];
    }
    inputs(jc + FASTFF_JC);
    __syncthreads();
    if (i >= K) return;
#pragma unroll
    for (int m = 0; m < PER; ++m) {
      const int jq = 4 * lane + 4 * FASTFF_SL * m, j = jc + jq;
      if (j >= N) break;
      if constexpr (!early) weights(j, w[m]);
      // dC/dW[i, j + c] = sum_r x[r, i] delta[r, j + c]; rows past the batch add exact zeros
      // (x and delta are zero there), and their dC/dx is never read
      T g[4] = {T(0), T(0), T(0), T(0)};
      for (int r = 0; r < PB; ++r) {
        T dv[4];
        load4(ds + r * FASTFF_JC + jq, dv);
        const T xr = xrow[r];
        for (int c = 0; c < 4; ++c) {
          acc[r] += dv[c] * w[m][c];
          g[c] += xr * dv[c];
        }
      }
      T updated[4];  // W[i, j + c] was read above: dC/dx has the old value
      for (int c = 0; c < 4; ++c) updated[c] = w[m][c] - rate * g[c];
      store_cols<VEC>(Wr + j, N - j, updated);
      for (int c = 0; GW && c < 4 && j + c < N; ++c) {  // GW: a constant, folded away
        g_sum += double(g[c]);
        g_sq += double(g[c]) * double(g[c]);
      }
    }
  };
  inputs(0);
  for (int jc = 0; jc < N; jc += FASTFF_JC) chunk(jc);
}

// B_l for rows [t ST, t ST + ST) of W_l, given delta_l (B, N): dC/dx for those rows with the old
// W, the update of those rows, and then delta_{l-1}, the bias step and the statistics of the
// layer below for the same units. delta is staged in shared memory JC columns at a time
// (ds[r][j], in ``red``); thread (ri, lane) takes row ri and the four columns 4 lane, 4 lane +
// 4 SL, ... of each chunk: one 16-byte load and store of W, and a 16-byte load of delta a row.
template <int PB, typename T, int ACT>
__device__ __forceinline__ void backward_strip(const LayerDesc* layers, int l, const T* x,
                               const T* dl, int B, int t, T rate, bool stats,
                               bool want_gw, T* red, T* xrows, double* sums) {
  const LayerDesc& d = layers[l];
  const int K = int(d.K), N = int(d.N), tid = threadIdx.x;
  const int ri = tid / FASTFF_SL, lane = tid % FASTFF_SL, i0 = t * FASTFF_ST, i = i0 + ri;
  // the strip's rows of x, xrows[ri][r], in shared memory: registers go to the rows of dC/dx
  __syncthreads();  // xrows is free: the block's last strip is done with it
  for (int e = tid; e < FASTFF_ST * PB; e += blockDim.x) {
    const int r = e % PB, ii = i0 + e / PB;
    xrows[e] = (r < B && ii < K) ? x[(size_t)r * K + ii] : T(0);
  }
  T acc[PB];
  for (int r = 0; r < PB; ++r) acc[r] = T(0);
  double g_sum = 0.0, g_sq = 0.0;
  T* Wr = ptr<T>(d.W) + (size_t)(i < K ? i : 0) * N;
  const T* xrow = xrows + ri * PB;
  const bool vec = rows_of_four(d);
  if (vec && want_gw)
    backward_sums<PB, true, true>(Wr, dl, red, i, K, N, B, lane, rate, xrow, acc, g_sum, g_sq);
  else if (vec)
    backward_sums<PB, true, false>(Wr, dl, red, i, K, N, B, lane, rate, xrow, acc, g_sum, g_sq);
  else if (want_gw)
    backward_sums<PB, false, true>(Wr, dl, red, i, K, N, B, lane, rate, xrow, acc, g_sum, g_sq);
  else
    backward_sums<PB, false, false>(Wr, dl, red, i, K, N, B, lane, rate, xrow, acc, g_sum, g_sq);
  if (want_gw) {  // per-strip sums, added up in strip order after the step (train_steps)
    const double s = block_sum(g_sum, sums, tid, blockDim.x);
    const double q = block_sum(g_sq, sums, tid, blockDim.x);
    if (tid == 0) {
      ptr<double>(d.gw_parts)[2 * t] = s;
      ptr<double>(d.gw_parts)[2 * t + 1] = q;
    }
  }
  if (l == 0) return;  // the first layer's dC/dx is not needed
  __syncthreads();  // red is free
  for (int r = 0; r < PB; ++r)
    if (r < B) red[(r * FASTFF_ST + ri) * FASTFF_SL + lane] = acc[r];
  __syncthreads();
  reduce_lanes(red, B * FASTFF_ST);
  const LayerDesc& p = layers[l - 1];  // the layer below, whose output x is
  T* pdelta = ptr<T>(p.delta);
  for (int e = tid; e < B * FASTFF_ST; e += blockDim.x) {
    const int r = e / FASTFF_ST, c = e % FASTFF_ST, ii = i0 + c;
    if (ii < K) {
      T* slot = red + (r * FASTFF_ST + c) * FASTFF_SL;
      const T dv = slot[0] * derivative<ACT>(x[(size_t)r * K + ii]);
      pdelta[(size_t)r * K + ii] = dv;
      slot[0] = dv;
    }
  }
  __syncthreads();
  const int ii = i0 + tid;
  if (tid < FASTFF_ST && ii < K) {  // one thread per unit of the layer below
    T colsum = T(0);
    double sum = 0.0, sum_sq = 0.0;
    for (int r = 0; r < B; ++r) {
      const T dv = red[(r * FASTFF_ST + tid) * FASTFF_SL];
      colsum += dv;
      sum += double(dv);
      sum_sq += double(dv) * double(dv);
    }
    ptr<T>(p.b)[ii] -= rate * colsum;
    if (stats) {
      ptr<double>(p.d_total)[ii] += sum;
      ptr<double>(p.d_total_sq)[ii] += sum_sq;
    }
  }
  if (stats && t == 0 && tid == 0) {
    ptr<long long>(p.counts)[0] += B;  // rows
    ptr<long long>(p.counts)[1] += 1;  // steps
  }
}

// Layer l's input in net n of the step's table (``layers``: that net's rows) at step s: the
// net's batch (io holds each net's x and y addresses) for the first layer, else the output of
// the layer below. K0: the nets' input width (read once by the caller: a register, not a
// load in every strip, which spilled in double).
template <typename T>
__device__ __forceinline__ const T* layer_input(const LayerDesc* layers, const long long* io,
                                                int n, int l, int s, int B, int K0) {
  return l == 0 ? ptr<const T>(io[2 * n]) + (size_t)s * B * K0 : ptr<const T>(layers[l - 1].h);
}

// The softmax cost of the batch from the logits z (B, N) into dz (B, N) of the block's shared
// memory; the block of strip 0 also writes the step's mean cost and steps the output bias.
template <typename T>
__device__ __forceinline__ void cost_strip(const LayerDesc& d, const long long* __restrict__ y, int B, int cost,
                           int t, T rate, T* dz, double* row_cost, double* loss) {
  const int N = int(d.N), tid = threadIdx.x;
  const T* z = ptr<const T>(d.h);
  __syncthreads();  // dz is free
  for (int r = tid; r < B; r += blockDim.x)
    row_cost[r] = cost_row(cost, z + (size_t)r * N, y[r], dz + (size_t)r * N, N, B);
  __syncthreads();
  if (t != 0) return;
  if (tid == 0) {  // row order (at most CUDA_STEP_MAX_BATCH rows)
    double s = 0.0;
    for (int r = 0; r < B; ++r) s += row_cost[r];
    loss[0] = s / B;
  }
  for (int j = tid; j < N; j += blockDim.x) {
    T colsum = T(0);
    for (int r = 0; r < B; ++r) colsum += dz[(size_t)r * N + j];
    ptr<T>(d.b)[j] -= rate * colsum;
  }
}
}  // namespace fastff

// ``steps`` SGD steps of ``nets`` nets of one shape at once (fastff.train_many; one net for a
// model's own step). desc: (nets, L) LayerDesc; io: (nets, 2) the addresses of each net's
// batches x (steps, B, K_0) and labels y (steps, B); lr: (nets, steps) rates; losses: (nets,
// steps) gets each step's mean cost. A phase's strips of every net are dealt to the blocks
// together, and a strip's arithmetic does not depend on which net or block it is, so each
// net's bits are those of training it alone. ``barrier``: six zeroed words, kept between
// launches (the grid barrier's word, one unused, and where its debugging bound reports; step s's phases are
// numbered s * 2 L + l forward, s * 2 L + 2 L - 1 - l backward). ``profile``: in a profiling
// build (FASTFF_PROFILE), block 0 writes the time the launch started and each phase's end
// (after its barrier) there, 1 + 2 L steps values; unused otherwise. Launched cooperatively
// (every block co-resident) with ST x SL threads a block. The launch bounds ask for MIN_BLOCKS
// blocks an SM in float (128 registers a thread, no spills); double asks for one, since the
// backward's PB rows of dC/dx and of staged delta take 64 of its registers (194 in all on
// sm_80, 212 on sm_90, where 128 spilled).
template <typename T, int ACT, int PB>
__global__ void __launch_bounds__(FASTFF_ST * FASTFF_SL, sizeof(T) == 4 ? FASTFF_MIN_BLOCKS : 1)
train_steps(const long long* __restrict__ desc, int L, int nets, const long long* __restrict__ io,
            int B, int steps, const T* __restrict__ lr, int cost, int want_stats, int want_gw,
            double* __restrict__ losses, unsigned* __restrict__ barrier,
            unsigned long long* __restrict__ profile) {
  using fastff::LayerDesc;
  FASTFF_SHARED(T, red, FASTFF_STAGE);  // a strip's staged inputs, then its sums
  FASTFF_SHARED(T, xrows, FASTFF_ST * PB);  // a backward strip's rows of x
  FASTFF_SHARED(T, dz, PB * FASTFF_MAXC);
  FASTFF_SHARED(double, row_cost, PB);
  FASTFF_SHARED(double, sums, FASTFF_ST * FASTFF_SL);
  FASTFF_SHARED(unsigned int, local_hist, FASTFF_MAX_BINS);
  const LayerDesc* all = reinterpret_cast<const LayerDesc*>(desc);
  for (int i = threadIdx.x; i < FASTFF_MAX_BINS; i += blockDim.x) local_hist[i] = 0u;
  const int K0 = int(all[0].K);
#if FASTFF_PROFILE
  if (blockIdx.x == 0 && threadIdx.x == 0) profile[0] = fastff::global_ns();
#else
  (void)profile;
#endif
  for (int s = 0; s < steps; ++s) {
    for (int l = 0; l < L; ++l) {
      const int strips = (int(all[l].N) + FASTFF_ST - 1) / FASTFF_ST;
      for (int u = blockIdx.x; u < nets * strips; u += gridDim.x) {
        const int n = u / strips, t = u - n * strips;
        const LayerDesc* layers = all + (size_t)n * L;
        const T* in = fastff::layer_input<T>(layers, io, n, l, s, B, K0);
        if (l < L - 1)
          fastff::forward_strip<PB, T, ACT>(layers[l], in, B, t, want_stats && layers[l].sat_low,
                                        red, local_hist);
        else
          fastff::forward_strip<PB, T, fastff::LINEAR>(layers[l], in, B, t, false, red, local_hist);
      }
      if (!fastff::grid_sync(barrier, unsigned(s * 2 * L + l))) return;  // forward of layer l
#if FASTFF_PROFILE
      if (blockIdx.x == 0 && threadIdx.x == 0) profile[1 + s * 2 * L + l] = fastff::global_ns();
#endif
    }
    for (int l = L - 1; l >= 0; --l) {
      const int strips = (int(all[l].K) + FASTFF_ST - 1) / FASTFF_ST;
      for (int u = blockIdx.x; u < nets * strips; u += gridDim.x) {
        const int n = u / strips, t = u - n * strips;
        const LayerDesc* layers = all + (size_t)n * L;
        const LayerDesc& d = layers[l];
        const T* in = fastff::layer_input<T>(layers, io, n, l, s, B, K0);
        const bool stats = want_stats && l > 0 && layers[l - 1].d_total;
        const bool gw = want_gw && d.gw_parts;
        const T rate = lr[(size_t)n * steps + s];
        const T* dl = fastff::ptr<const T>(d.delta);
        if (l == L - 1) {
          const long long* y = fastff::ptr<const long long>(io[2 * n + 1]) + (size_t)s * B;
          fastff::cost_strip<T>(d, y, B, cost, t, rate, dz, row_cost,
                                losses + (size_t)n * steps + s);
          dl = dz;
        }
        fastff::backward_strip<PB, T, ACT>(layers, l, in, dl, B, t, rate, stats, gw, red, xrows,
                                       sums);
      }
      // the launch's last barrier orders nothing that its end does not, unless block 0 goes
      // on to add every strip's dC/dW sums (want_gw) or the profile stamps it
      const bool last = s == steps - 1 && l == 0 && !want_gw && !FASTFF_PROFILE;
      if (!last && !fastff::grid_sync(barrier, unsigned(s * 2 * L + 2 * L - 1 - l)))
        return;  // backward of layer l
#if FASTFF_PROFILE
      if (blockIdx.x == 0 && threadIdx.x == 0)
        profile[1 + s * 2 * L + 2 * L - 1 - l] = fastff::global_ns();
#endif

    }
    if (want_gw && blockIdx.x == 0 && threadIdx.x == 0) {
      for (int i = 0; i < nets * L; ++i) {  // strip order: the same sums on every launch
        const LayerDesc& d = all[i];
        if (!d.gw_parts) continue;
        const double* parts = fastff::ptr<const double>(d.gw_parts);
        double sum = 0.0, sum_sq = 0.0;
        for (int t = 0; t < (int(d.K) + FASTFF_ST - 1) / FASTFF_ST; ++t) {
          sum += parts[2 * t];
          sum_sq += parts[2 * t + 1];
        }
        fastff::ptr<double>(d.gw_total)[0] += sum;
        fastff::ptr<double>(d.gw_total_sq)[0] += sum_sq;
      }
    }
  }
}

// The grid barrier alone, ``rounds`` in a row (benchmarks/gpu_check.py times it at the
// persistent step's grid; the debugging bound applies as in the step).
__global__ void __launch_bounds__(FASTFF_ST * FASTFF_SL, FASTFF_MIN_BLOCKS)
barrier_rounds(unsigned* __restrict__ barrier, int rounds) {
  for (int r = 0; r < rounds; ++r)
    if (!fastff::grid_sync(barrier, unsigned(r))) return;
}
