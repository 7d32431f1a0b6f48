// fastff CUDA kernels: what every kernel shares. The sources are compiled by NVRTC for the GPU
// (fastff/kernels/cuda.py) and, in the tests only, by g++ against a small host emulation
// header (tests/cuda_host/emu.h), so they use nothing that header does not define.
//
// Layouts (row-major, as the NumPy reference): x (B, K), W (K, N), b (N), h (B, N).
// Tile sizes come from fastff/config.py as -D defines; the defaults below are for reading.
#ifndef FASTFF_TM
#define FASTFF_TM 32  // GEMM tile rows (x rows); threads per block: (TN / 4) x (TM / 2)
#endif
#ifndef FASTFF_TN
#define FASTFF_TN 64  // GEMM tile columns
#endif
#ifndef FASTFF_TK
#define FASTFF_TK 16  // reduction slice staged in shared memory per iteration
#endif
#ifndef FASTFF_UT
#define FASTFF_UT 64  // update tile: UT x UT entries of W per block, 4 x 4 per thread
#endif
#ifndef FASTFF_THREADS
#define FASTFF_THREADS 256  // threads per block of the one-thread-per-column kernels
#endif
#ifndef FASTFF_DR
#define FASTFF_DR 32  // rows of a block of the delta kernel (dense_backward_delta)
#endif
#ifndef FASTFF_MIN_BLOCKS
#define FASTFF_MIN_BLOCKS 2  // blocks per SM the launch bounds ask ptxas to leave room for
#endif
#ifndef FASTFF_MAX_BINS
#define FASTFF_MAX_BINS 1024  // largest activation histogram (config.HIST_BINS)
#endif
#ifndef FASTFF_SHARED
#define FASTFF_SHARED(T, name, n) __shared__ T name[n]
#endif
// The persistent training step (train_step.cu): blocks of ST x SL threads work on strips of ST
// columns (forward) or rows (backward) of W, SL threads along each; batches of at most PB rows
// and softmax layers of at most MAXC classes.
#ifndef FASTFF_ST
#define FASTFF_ST 8
#endif
#ifndef FASTFF_SL
#define FASTFF_SL 32
#endif
#ifndef FASTFF_PB
#define FASTFF_PB 16
#endif
#ifndef FASTFF_MAXC
#define FASTFF_MAXC 32
#endif

namespace fastff {

enum Act { LINEAR = 0, SIGMOID = 1, TANH = 2, SOFTSIGN = 3, RELU = 4 };  // activations.py codes

__device__ __forceinline__ float ff_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double ff_tanh(double v) { return tanh(v); }
__device__ __forceinline__ float ff_exp(float v) { return expf(v); }
__device__ __forceinline__ double ff_exp(double v) { return exp(v); }
__device__ __forceinline__ float ff_log(float v) { return logf(v); }
__device__ __forceinline__ double ff_log(double v) { return log(v); }
// Division without the IEEE slow-path subroutine, whose stack frame ptxas reports as local
// memory (the compile gate refuses it): float within 2 ulp, double within 1.5 ulp.
__device__ __forceinline__ float ff_div(float a, float b) { return __fdividef(a, b); }
__device__ __forceinline__ double ff_div(double a, double b) { return a * __drcp_rn(b); }
__device__ __forceinline__ float ff_sqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double ff_sqrt(double v) { return sqrt(v); }

// Grid-scope memory operations of the grid barrier (fastff::grid_sync). On the GPU they are
// PTX with the orders named, on generic addresses (the pointers are generic: no .global); the host emulator (tests/cuda_host/emu.h) gives the same orders
// through std::atomic_ref, so ThreadSanitizer judges the barrier by the orders the GPU gets.
#ifndef FASTFF_EMULATED
__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void store_release(unsigned* p, unsigned v) {
  asm volatile("st.release.gpu.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ unsigned fetch_add_acq_rel(unsigned* p, unsigned v) {
  unsigned old;
  asm volatile("atom.acq_rel.gpu.add.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}
__device__ __forceinline__ void wait_while_equal(const unsigned* p, unsigned v) {
  while (load_acquire(p) == v) __nanosleep(64);
}
#endif

// A barrier across every block of a co-resident (cooperative) launch. bar[0] counts arrivals,
// bar[1] is the generation: the last block to arrive resets the count, then publishes the next
// generation; the others wait for it. Zeroed once, the pair serves any number of launches.
// Everything a block wrote before the barrier is visible to every block after it.
__device__ __forceinline__ void grid_sync(unsigned* bar) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned gen = load_acquire(bar + 1);
    __threadfence();
    if (fetch_add_acq_rel(bar, 1u) == gridDim.x - 1) {
      atomicExch(bar, 0u);
      store_release(bar + 1, gen + 1u);
    } else {
      wait_while_equal(bar + 1, gen);
    }
  }
  __syncthreads();
}

// The last block to arrive at ``counter`` of ``expected`` blocks that each wrote a part of one
// result (the split-K partial products of a tile, the rows of a column tile): true in every
// thread of that block, which then sees every other block's writes (release by each arriving
// block, acquire by the last, as the grid barrier's). The last block resets the counter, so a
// counter zeroed once serves every later launch on its stream. Call once per block, from every
// thread; the answer is uniform over the block.
__device__ __forceinline__ bool last_to_arrive(unsigned* counter, unsigned expected) {
  FASTFF_SHARED(int, last, 1);
  __syncthreads();
  if (threadIdx.x == 0 && threadIdx.y == 0) {
    __threadfence();
    last[0] = fetch_add_acq_rel(counter, 1u) == expected - 1;
    if (last[0]) atomicExch(counter, 0u);
  }
  __syncthreads();
  return last[0] != 0;
}

// h = f(s)
template <int ACT, typename T>
__device__ __forceinline__ T activate(T s) {
  if (ACT == TANH) return ff_tanh(s);
  if (ACT == SIGMOID) return ff_div(T(1), T(1) + ff_exp(-s));
  if (ACT == SOFTSIGN) return ff_div(s, T(1) + (s < T(0) ? -s : s));
  if (ACT == RELU) return s > T(0) ? s : T(0);
  return s;
}

// f'(s) expressed from the output h = f(s)
template <int ACT, typename T>
__device__ __forceinline__ T derivative(T h) {
  if (ACT == TANH) return T(1) - h * h;
  if (ACT == SIGMOID) return h * (T(1) - h);
  if (ACT == SOFTSIGN) { T t = T(1) - (h < T(0) ? -h : h); return t * t; }
  if (ACT == RELU) return h > T(0) ? T(1) : T(0);
  return T(1);
}

// One parameter's step under per-parameter rates (fastff/kernels/rates.py), from its sums over
// the batch g = sum_r x delta and s = sum_r x^2 q: the running estimate (the Gauss-Newton
// diagonal, or the per-example gradient variance), then w -= lr g / (damping + scale), where
// the caller's lr already carries the damping factor (rate = lr / (1 + scale / damping)).
template <typename T>
__device__ __forceinline__ void rate_step(T& w, T& avg, T g, T s, T lr, int hessian, T damping,
                                          T keep, T corr, int B) {
  T est = s;
  if (!hessian) {
    est = ff_div(T(B), T(B - 1)) * (T(B) * s - g * g);
    est = est > T(0) ? est : T(0);
  }
  avg = keep * avg + (T(1) - keep) * est;
  const T scale = hessian ? corr * avg : ff_sqrt(corr * avg);
  w -= ff_div(lr * g, damping + scale);
}

// Bin of a fixed-bin histogram, in float64 as reference.hist_bin_index: values below the range
// go to bin 0, above it to the last bin, NaN to -1 (not counted).
__device__ __forceinline__ int hist_bin(double v, double lo, double scale, int bins) {
  double t = (v - lo) * scale;
  const double top = double(bins - 1);
  t = t > top ? top : t;
  t = t < 0.0 ? 0.0 : t;
  return t == t ? int(t) : -1;
}

// Sum of one value per thread of the block, in a fixed tree order (deterministic); every
// thread must call it. ``scratch`` holds one double per thread; the block has a power-of-two
// number of threads. Returns the sum in thread 0.
__device__ __forceinline__ double block_sum(double v, double* scratch, int tid, int threads) {
  scratch[tid] = v;
  __syncthreads();
  for (int half = threads / 2; half > 0; half /= 2) {
    if (tid < half) scratch[tid] += scratch[tid + half];
    __syncthreads();
  }
  double out = scratch[0];
  __syncthreads();
  return out;
}

// parts[split] = A[:, slice] @ op(Bm)[slice, :] for one tile of C (M x Nc), where the reduction
// dimension R is cut into splits of ``chunk`` (a multiple of TK): the split-K product that
// spreads a batch-10 layer over every SM. A is (M, R); Bm is (R, Nc), or (Nc, R) with TRANS_B.
// Block: (TN / 4) x (TM / 2) threads, each 2 rows x 4 columns (strided by TN / 4: coalesced).
template <typename T, bool TRANS_B>
__device__ __forceinline__ void gemm_partial_tile(const T* __restrict__ A, const T* __restrict__ Bm,
                                                  T* __restrict__ parts, int M, int R, int Nc,
                                                  int chunk) {
  // Rows padded by one element: the staging loops write as (and bs with TRANS_B) with k
  // fastest, which at a stride of TM (TN) words would put every thread of a warp in one bank.
  constexpr int AS = FASTFF_TM + 1, BS = FASTFF_TN + 1;
  FASTFF_SHARED(T, as, FASTFF_TK * AS);  // as[k][r]
  FASTFF_SHARED(T, bs, FASTFF_TK * BS);  // bs[k][c]
  const int cols = FASTFF_TN / 4;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * cols + tx;
  const int threads = cols * (FASTFF_TM / 2);
  const int r0 = blockIdx.y * FASTFF_TM, c0 = blockIdx.x * FASTFF_TN;
  const int k_begin = blockIdx.z * chunk;
  const int k_end = min(R, k_begin + chunk);
  T acc[2][4];
  for (int i = 0; i < 2; ++i)
    for (int c = 0; c < 4; ++c) acc[i][c] = T(0);
  for (int kt = k_begin; kt < k_end; kt += FASTFF_TK) {
    for (int e = tid; e < FASTFF_TM * FASTFF_TK; e += threads) {
      const int r = e / FASTFF_TK, k = e % FASTFF_TK, gr = r0 + r, gk = kt + k;
      as[k * AS + r] = (gr < M && gk < k_end) ? A[(size_t)gr * R + gk] : T(0);
    }
    for (int e = tid; e < FASTFF_TK * FASTFF_TN; e += threads) {
      int k, c;
      if (TRANS_B) { c = e / FASTFF_TK; k = e % FASTFF_TK; }  // read Bm rows contiguously
      else { k = e / FASTFF_TN; c = e % FASTFF_TN; }
      const int gk = kt + k, gc = c0 + c;
      T v = T(0);
      if (gk < k_end && gc < Nc) v = TRANS_B ? Bm[(size_t)gc * R + gk] : Bm[(size_t)gk * Nc + gc];
      bs[k * BS + c] = v;
    }
    __syncthreads();
    for (int k = 0; k < FASTFF_TK; ++k) {
      const T a0 = as[k * AS + 2 * ty], a1 = as[k * AS + 2 * ty + 1];
      for (int c = 0; c < 4; ++c) {
        const T w = bs[k * BS + tx + cols * c];
        acc[0][c] += a0 * w;
        acc[1][c] += a1 * w;
      }
    }
    __syncthreads();
  }
  for (int i = 0; i < 2; ++i) {
    const int r = r0 + 2 * ty + i;
    for (int c = 0; c < 4; ++c) {
      const int col = c0 + tx + cols * c;
      if (r < M && col < Nc) parts[((size_t)blockIdx.z * M + r) * Nc + col] = acc[i][c];
    }
  }
}

}  // namespace fastff
