// The output costs, one block each: softmax_nll (the mean negative log-likelihood of a softmax)
// and softmax_quadratic (the mean of 1/2 sum_k (p_k - t_k)^2, p the softmax, t the one-hot
// target), each with its gradient. Each thread takes rows; the loss is added up by thread 0 in
// row order (deterministic) and stays on the device. A label outside [0, K) (which the public
// checks never let through) gives a NaN loss instead of a read out of bounds.

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

// the mean of row_loss[0..B) into loss[0], in row order, by thread 0 after the block's rows
__device__ inline void mean_rows(const double* row_loss, double* loss, int B) {
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0.0;
    for (int r = 0; r < B; ++r) s += row_loss[r];
    loss[0] = s / B;
  }
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
}  // namespace fastff

template <typename T>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
softmax_nll(const T* __restrict__ z, const long long* __restrict__ y, T* __restrict__ grad,
            double* __restrict__ row_loss, double* __restrict__ loss, int B, int K) {
  for (int r = threadIdx.x; r < B; r += blockDim.x)
    row_loss[r] = fastff::nll_row(z + (size_t)r * K, y[r], grad + (size_t)r * K, K, B);
  fastff::mean_rows(row_loss, loss, B);
}

template <typename T>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
softmax_quadratic(const T* __restrict__ z, const long long* __restrict__ y, T* __restrict__ grad,
                  double* __restrict__ row_loss, double* __restrict__ loss, int B, int K) {
  for (int r = threadIdx.x; r < B; r += blockDim.x)
    row_loss[r] = fastff::quadratic_row(z + (size_t)r * K, y[r], grad + (size_t)r * K, K, B);
  fastff::mean_rows(row_loss, loss, B);
}
