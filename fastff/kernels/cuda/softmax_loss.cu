// The output costs, one block each: softmax_nll (the mean negative log-likelihood of a softmax)
// and softmax_quadratic (the mean of 1/2 sum_k (p_k - t_k)^2, p the softmax, t the one-hot
// target), each with its gradient. Each thread takes rows; the loss is added up in a fixed
// order (deterministic: mean_rows) and stays on the device. A label outside [0, K) (which the
// public checks never let through) gives a NaN loss instead of a read out of bounds.

namespace fastff {
// row r's softmax into gr[0..K) (from the logits zr), with the max m subtracted for stability;
// m and the sum tot of exp(z - m) come back for the log-likelihood (the CPU twin: _exp_row)
template <typename T>
__device__ inline void softmax_row(const T* zr, T* gr, int K, T& m, T& tot) {
  m = zr[0];
  for (int k = 1; k < K; ++k) m = zr[k] > m ? zr[k] : m;
  tot = T(0);
  for (int k = 0; k < K; ++k) {
    gr[k] = ff_exp(zr[k] - m);
    tot += gr[k];
  }
  for (int k = 0; k < K; ++k) gr[k] = ff_div(gr[k], tot);
}

// The mean of the rows' costs into loss[0]: ``mine`` is the sum of thread tid's rows (tid,
// tid + threads, ... in order; threads at most FASTFF_THREADS); the threads' sums are added in
// a fixed tree in shared memory, the same bits on every launch (one thread adding B costs from
// memory was a chain of B / 16 round trips: 64 at batch 1024).
__device__ inline void mean_rows(double mine, double* loss, int B, int tid, int threads) {
  FASTFF_SHARED(double, part, FASTFF_THREADS);
  part[tid] = mine;
  __syncthreads();
  for (int width = threads; width > 1;) {
    const int half = (width + 1) / 2;
    if (tid < width - half) part[tid] += part[tid + half];
    width = half;
    __syncthreads();
  }
  if (tid == 0) loss[0] = part[0] / B;
}

__device__ inline double quiet_nan() { return __longlong_as_double(0x7ff8000000000000LL); }
}  // namespace fastff

namespace fastff {
// One row of softmax_nll: gr[0..K) = (softmax(zr) - onehot(label)) / B; returns the row's cost
// -log p_label, as (z_y - m) - log(tot): finite even where p_y underflows.
template <typename T>
__device__ inline double nll_row(const T* zr, long long label, T* gr, int K, int B) {
  T m, tot;
  softmax_row(zr, gr, K, m, tot);
  const bool ok = label >= 0 && label < K;
  if (ok) gr[label] -= T(1);
  for (int k = 0; k < K; ++k) gr[k] = ff_div(gr[k], T(B));
  return ok ? double(ff_log(tot)) + double(m) - double(zr[label]) : quiet_nan();
}

// One row of softmax_quadratic: gr[0..K) = d/dz of 1/2 sum_k (p_k - t_k)^2, over B; returns the
// row's cost. It needs only p, so it is finite for any logits.
template <typename T>
__device__ inline double quadratic_row(const T* zr, long long label, T* gr, int K, int B) {
  T m, tot;
  softmax_row(zr, gr, K, m, tot);
  const bool ok = label >= 0 && label < K;
  T dot = T(0);  // sum_k (p_k - t_k) p_k
  double sq = 0.0;
  for (int k = 0; k < K; ++k) {
    const T e = k == label ? gr[k] - T(1) : gr[k];
    dot += e * gr[k];
    sq += double(e) * double(e);
  }
  for (int k = 0; k < K; ++k) {
    const T p = gr[k];
    const T e = k == label ? p - T(1) : p;
    gr[k] = ff_div(p * (e - dot), T(B));
  }
  return ok ? 0.5 * sq : quiet_nan();
}

enum Cost { NLL = 0, QUADRATIC = 1 };  // losses.py order: the step kernel's ``cost`` argument

template <typename T>
__device__ inline double cost_row(int cost, const T* zr, long long label, T* gr, int K, int B) {
  return cost == QUADRATIC ? quadratic_row(zr, label, gr, K, B) : nll_row(zr, label, gr, K, B);
}

// Up to this many classes a thread forms its row's gradient in shared memory and copies it out
// once (the row functions read and write gr several times: a round trip to L2 each in global
// memory); more go straight to global memory. Rows padded by one: no bank conflicts.
constexpr int COST_STAGED_CLASSES = 16;

// Thread tid's rows' costs (rows tid, tid + threads, ... summed in order) and gradients into
// grad: the cost's first part. ``staged``: COST_STAGED values a thread in shared memory. z is
// read as written in the same launch where the output layer's forward forms it (no __restrict__:
// not through the read-only cache).
constexpr int COST_STAGED = COST_STAGED_CLASSES + 1;
template <typename T>
__device__ inline double rows_cost(int cost, const T* z, const long long* __restrict__ y,
                                   T* __restrict__ grad, int B, int K, int tid, int threads,
                                   T* staged) {
  T* own = staged + tid * COST_STAGED;
  double sum = 0.0;
  for (int r = tid; r < B; r += threads) {
    T* out = grad + (size_t)r * K;
    T* gr = K <= COST_STAGED_CLASSES ? own : out;
    sum += cost_row(cost, z + (size_t)r * K, y[r], gr, K, B);
    if (gr != out)
      for (int k = 0; k < K; ++k) out[k] = gr[k];
  }
  return sum;
}

// The output layer's bias step from the cost's gradient (its delta: the layer is linear), in the
// cost's block (bias_step != 0: a model's fused pass, fused_pass.output_and_backward):
// b -= lr * grad.sum(0). The block's threads are dealt (column, row group) units (row_groups, as
// the layer epilogues': 28 row groups a column of a 9-class cost), each summing its rows in
// order in T; the units of a column are then added in row-group order: the same bits on every
// launch.
template <typename T>
__device__ inline void bias_step_of_rows(const T* __restrict__ grad, T* __restrict__ b,
                                         const T* __restrict__ lr, int B, int K, int tid,
                                         int threads) {
  FASTFF_SHARED(T, red, FASTFF_THREADS);
  __syncthreads();  // every row's gradient written
  const int groups = row_groups(threads, K);
  if (groups == 1) {  // a wide output: a thread a column, its rows in order
    for (int c = tid; c < K; c += threads) {
      T colsum = T(0);
      for (int r = 0; r < B; ++r) colsum += grad[(size_t)r * K + c];
      b[c] -= lr[0] * colsum;
    }
    return;
  }
  const int u = tid;  // groups * K <= threads units, one a thread
  if (u < groups * K) {
    T colsum = T(0);
    for (int r = u / K; r < B; r += groups) colsum += grad[(size_t)r * K + u % K];
    red[u] = colsum;
  }
  __syncthreads();
  if (u < K) {
    T colsum = T(0);
    for (int g = 0; g < groups; ++g) colsum += red[g * K + u];
    b[u] -= lr[0] * colsum;
  }
}
}  // namespace fastff

namespace fastff {
// A whole cost in one block of ``threads`` threads (at most FASTFF_THREADS): the rows' costs and
// gradients (rows_cost), with bias_step the output layer's bias step (bias_step_of_rows), and the
// mean into loss[0] (mean_rows).
template <typename T>
__device__ inline void block_cost(int cost, const T* z, const long long* __restrict__ y,
                                  T* __restrict__ grad, double* __restrict__ loss, int B, int K,
                                  T* __restrict__ b, const T* __restrict__ lr, int bias_step,
                                  int tid, int threads, T* staged) {
  const double mine = rows_cost(cost, z, y, grad, B, K, tid, threads, staged);
  if (bias_step) bias_step_of_rows(grad, b, lr, B, K, tid, threads);
  mean_rows(mine, loss, B, tid, threads);
}
}  // namespace fastff

// The costs' kernels, one block of FASTFF_THREADS threads: with bias_step != 0 they also take
// the output layer's bias step (fastff::bias_step_of_rows; b and lr are not read otherwise).
template <typename T>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
softmax_nll(const T* __restrict__ z, const long long* __restrict__ y, T* __restrict__ grad,
            double* __restrict__ loss, int B, int K, T* __restrict__ b,
            const T* __restrict__ lr, int bias_step) {
  FASTFF_SHARED(T, staged, FASTFF_THREADS * fastff::COST_STAGED);
  fastff::block_cost(fastff::NLL, z, y, grad, loss, B, K, b, lr, bias_step, threadIdx.x,
                     blockDim.x, staged);
}

template <typename T>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
softmax_quadratic(const T* __restrict__ z, const long long* __restrict__ y, T* __restrict__ grad,
                  double* __restrict__ loss, int B, int K, T* __restrict__ b,
                  const T* __restrict__ lr, int bias_step) {
  FASTFF_SHARED(T, staged, FASTFF_THREADS * fastff::COST_STAGED);
  fastff::block_cost(fastff::QUADRATIC, z, y, grad, loss, B, K, b, lr, bias_step, threadIdx.x,
                     blockDim.x, staged);
}

// The output layer's forward (linear, no statistics: z = x @ W + b, dense_forward_fused's
// split-K tiles) and then the cost of z (``cost``: fastff::Cost) in the launch's last block to
// finish a tile, which also takes the output layer's bias step (its delta is the cost's
// gradient): the cost without a launch of its own (fused_pass.output_and_backward). Every tile's
// reads of b come before that block's arrival, so the step cannot race them. The cost's staged
// rows reuse the GEMM's shared memory, dead by then. Float32 with tiles of at most
// FASTFF_THREADS threads (fused_pass.fuses_cost); the kernel is empty for others.
template <typename T>
__global__ void __launch_bounds__((FASTFF_TN / 4) * (FASTFF_TM / 4), FASTFF_MIN_BLOCKS)
dense_forward_and_cost(const T* __restrict__ x, const T* __restrict__ W, T* __restrict__ parts,
                       unsigned* __restrict__ counters, T* __restrict__ b, T* __restrict__ out,
                       int B, int K, int N, int chunk, int products, int cost,
                       const long long* __restrict__ y, T* __restrict__ grad,
                       double* __restrict__ loss, const T* __restrict__ lr) {
  constexpr int threads = (FASTFF_TN / 4) * (FASTFF_TM / 4);
  if constexpr (threads <= FASTFF_THREADS) {
    constexpr int a_size = FASTFF_TK * fastff::GEMM_AS * fastff::gemm_planes<T>;
    constexpr int gemm = a_size + FASTFF_TK * fastff::GEMM_BS * fastff::gemm_planes<T>;
    constexpr int staged = threads * fastff::COST_STAGED;
    FASTFF_SHARED(T, pool, gemm > staged ? gemm : staged);
    if (!fastff::forward_tile<T, fastff::LINEAR>(x, W, parts, counters, nullptr, b, out, B, K, N,
                                                 chunk, products, 0, T(0), T(0), nullptr, 1,
                                                 0.0, 0.0, pool, pool + a_size))
      return;
    const int tiles = gridDim.x * gridDim.y;
    if (!fastff::last_to_arrive(counters + tiles, tiles)) return;
    fastff::block_cost(cost, out, y, grad, loss, B, N, b, lr, 1,
                       threadIdx.y * blockDim.x + threadIdx.x, threads, pool);
  }
}
