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

// The mean of the rows' costs into loss[0]: ``mine`` is the sum of this thread's rows (tid,
// tid + threads, ... in order); the threads' sums are added in a fixed tree in shared memory,
// the same bits on every launch (one thread adding B costs from memory was a chain of B / 16
// round trips: 64 at batch 1024).
__device__ inline void mean_rows(double mine, double* loss, int B) {
  FASTFF_SHARED(double, part, FASTFF_THREADS);
  const int tid = threadIdx.x;
  part[tid] = mine;
  __syncthreads();
  for (int width = blockDim.x; width > 1;) {
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

// The block's rows' costs (rows tid, tid + threads, ... of this thread, summed in order) and
// gradients into grad: the cost kernels' first part.
template <typename T>
__device__ inline double rows_cost(int cost, const T* __restrict__ z,
                                   const long long* __restrict__ y, T* __restrict__ grad, int B,
                                   int K) {
  FASTFF_SHARED(T, staged, FASTFF_THREADS * (COST_STAGED_CLASSES + 1));
  T* own = staged + threadIdx.x * (COST_STAGED_CLASSES + 1);
  double sum = 0.0;
  for (int r = threadIdx.x; r < B; r += blockDim.x) {
    T* out = grad + (size_t)r * K;
    T* gr = K <= COST_STAGED_CLASSES ? own : out;
    sum += cost_row(cost, z + (size_t)r * K, y[r], gr, K, B);
    if (gr != out)
      for (int k = 0; k < K; ++k) out[k] = gr[k];
  }
  return sum;
}

// The output layer's bias step from the cost's gradient (its delta: the layer is linear), in the
// cost's own block (bias_step != 0: a model's fused backward pass, launchers.backward_layers):
// b -= lr * grad.sum(0). The block's threads are dealt (column, row group) units (row_groups, as
// the layer epilogues': 28 row groups a column of a 9-class cost), each summing its rows in
// order in T; the units of a column are then added in row-group order: the same bits on every
// launch.
template <typename T>
__device__ inline void bias_step_of_rows(const T* __restrict__ grad, T* __restrict__ b,
                                         const T* __restrict__ lr, int B, int K) {
  FASTFF_SHARED(T, red, FASTFF_THREADS);
  __syncthreads();  // every row's gradient written
  const int threads = blockDim.x, groups = row_groups(threads, K);
  if (groups == 1) {  // a wide output: a thread a column, its rows in order
    for (int c = threadIdx.x; c < K; c += threads) {
      T colsum = T(0);
      for (int r = 0; r < B; ++r) colsum += grad[(size_t)r * K + c];
      b[c] -= lr[0] * colsum;
    }
    return;
  }
  const int u = threadIdx.x;  // groups * K <= threads units, one a thread
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

// The costs' kernels: with bias_step != 0 they also take the output layer's bias step
// (fastff::bias_step_of_rows; b and lr are not read otherwise).
template <typename T>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
softmax_nll(const T* __restrict__ z, const long long* __restrict__ y, T* __restrict__ grad,
            double* __restrict__ loss, int B, int K, T* __restrict__ b,
            const T* __restrict__ lr, int bias_step) {
  const double mine = fastff::rows_cost(fastff::NLL, z, y, grad, B, K);
  if (bias_step) fastff::bias_step_of_rows(grad, b, lr, B, K);
  fastff::mean_rows(mine, loss, B);
}

template <typename T>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
softmax_quadratic(const T* __restrict__ z, const long long* __restrict__ y, T* __restrict__ grad,
                  double* __restrict__ loss, int B, int K, T* __restrict__ b,
            const T* __restrict__ lr, int bias_step) {
  const double mine = fastff::rows_cost(fastff::QUADRATIC, z, y, grad, B, K);
  if (bias_step) fastff::bias_step_of_rows(grad, b, lr, B, K);
  fastff::mean_rows(mine, loss, B);
}
