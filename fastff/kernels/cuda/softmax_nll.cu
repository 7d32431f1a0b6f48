// softmax_nll: the mean negative log-likelihood of a softmax and its gradient, one block.
// Each thread takes rows; the loss is added up by thread 0 in row order (deterministic) and
// stays on the device. A label outside [0, K) (which the public checks never let through)
// gives a NaN loss instead of a read out of bounds.

template <typename T>
__global__ void __launch_bounds__(FASTFF_THREADS, FASTFF_MIN_BLOCKS)
softmax_nll(const T* __restrict__ z, const long long* __restrict__ y, T* __restrict__ grad,
            double* __restrict__ row_loss, double* __restrict__ loss, int B, int K) {
  for (int r = threadIdx.x; r < B; r += blockDim.x) {
    const T* zr = z + (size_t)r * K;
    T* gr = grad + (size_t)r * K;
    T m = zr[0];
    for (int k = 1; k < K; ++k) m = zr[k] > m ? zr[k] : m;
    T tot = T(0);
    for (int k = 0; k < K; ++k) {
      gr[k] = fastff::ff_exp(zr[k] - m);
      tot += gr[k];
    }
    const long long label = y[r];
    const bool ok = label >= 0 && label < K;
    for (int k = 0; k < K; ++k) gr[k] = fastff::ff_div(gr[k], tot);
    if (ok) gr[label] -= T(1);
    for (int k = 0; k < K; ++k) gr[k] = fastff::ff_div(gr[k], T(B));
    row_loss[r] = ok ? double(fastff::ff_log(tot)) + double(m) - double(zr[label])
                     : __longlong_as_double(0x7ff8000000000000LL);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0.0;
    for (int r = 0; r < B; ++r) s += row_loss[r];
    loss[0] = s / B;
  }
}
