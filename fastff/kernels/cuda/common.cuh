// fastff CUDA kernels: what every kernel shares. The sources are compiled by NVRTC for the GPU
// (fastff/kernels/cuda.py) and, in the tests only, by g++ against a small host emulation
// header (tests/cuda_host/emu.h), so they use nothing that header does not define.
//
// Layouts (row-major, as the NumPy reference): x (B, K), W (K, N), b (N), h (B, N).
// Tile sizes come from fastff/config.py as -D defines; the defaults below are for reading.
#ifndef FASTFF_TM
#define FASTFF_TM 64  // GEMM tile rows (x rows); threads per block: (TN / 4) x (TM / 4)
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
#define FASTFF_SHARED(T, name, n) __shared__ __align__(16) T name[n]  // 16: load4
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
// How a strip stages its inputs in shared memory (fastff.kernels.cuda.geometry.step_chunks):
// KC columns of a layer's input a time (forward), JC columns of delta (backward), in one
// buffer of STAGE elements that the strip's reduction shares.
#ifndef FASTFF_KC
#define FASTFF_KC 192
#endif
#ifndef FASTFF_JC
#define FASTFF_JC 256
#endif
#ifndef FASTFF_STAGE
#define FASTFF_STAGE 4096
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
#ifndef FASTFF_BARRIER_POLLS
#define FASTFF_BARRIER_POLLS 0  // a grid barrier's polls before it gives up (0: never; debugging)
#endif
#ifndef FASTFF_PROFILE
#define FASTFF_PROFILE 0  // 1: the persistent step records when each phase ends (profiling)
#endif
#ifndef FASTFF_EMULATED
// The GPU's nanosecond clock, the same on every SM (profiling builds only).
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
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
// A block gives up at a grid barrier (the debugging bound): the first to do so records itself
// (block + 1), the phase (+ 1) and how far the barrier's word had moved since the wait began
// (fastff.kernels.cuda.barrier turns that into arrivals) in report[0..2], then report[3] tells
// every other waiting block to give up too.
__device__ __forceinline__ void give_up(const unsigned* p, unsigned start, unsigned* report,
                                        unsigned phase) {
  if (atomicCAS(report, 0u, blockIdx.x + 1u) == 0u) {
    report[1] = phase + 1u;
    report[2] = load_acquire(p) - start;
    store_release(report + 3, 1u);
  }
}

// Wait until the top bit of *p differs from that of ``old`` (the word's value this block's
// arrival saw); false where the debugging bound (FASTFF_BARRIER_POLLS) gave up first.
__device__ __forceinline__ bool wait_for_flip(const unsigned* p, unsigned old, unsigned* report,
                                              unsigned phase) {
  const unsigned top = old & 0x80000000u;
#if FASTFF_BARRIER_POLLS
  unsigned long long polls = 0;
  while ((load_acquire(p) & 0x80000000u) == top) {
    __nanosleep(64);
    if (load_acquire(report + 3) != 0u) return false;  // another block gave up: so does this
    if (++polls >= FASTFF_BARRIER_POLLS) {
      give_up(p, top, report, phase);
      return false;
    }
  }
#else
  (void)report, (void)phase;
  while ((load_acquire(p) & 0x80000000u) == top) __nanosleep(64);
#endif
  return true;
}
#endif

// A barrier across every block of a co-resident (cooperative) launch, one atomic a block: block
// 0 adds 2^31 - (G - 1) to bar[0] and every other block 1, so the word's top bit flips exactly
// when the G-th block arrives, and its low bits are back where they were; each block waits for
// the flip. No block resets anything, so the word, zeroed once, serves any number of barriers
// and launches (as cooperative groups' grid sync). The arrival is a release and the wait an
// acquire: everything a block wrote before the barrier is visible to every block after it.
// With the debugging bound (FASTFF_BARRIER_POLLS) it returns false, in every thread of the
// block, where a block gave up waiting: bar[2..5] then say who, where (``phase``) and how far
// the arrivals got (give_up), and the kernel must return. bar[1] is unused.
__device__ __forceinline__ bool grid_sync(unsigned* bar, unsigned phase) {
#if FASTFF_BARRIER_POLLS
  FASTFF_SHARED(int, waited, 1);
#endif
  __syncthreads();
  if (threadIdx.x == 0) {
    // the acq_rel atomic is the only fence: its release covers the block's writes, which
    // __syncthreads ordered before it (happens-before is transitive)
    const unsigned add = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1u) : 1u;
    const bool ok = wait_for_flip(bar, fetch_add_acq_rel(bar, add), bar + 2, phase);
#if FASTFF_BARRIER_POLLS
    waited[0] = ok;
#else
    (void)ok;
#endif
  }
  __syncthreads();
#if FASTFF_BARRIER_POLLS
  return waited[0] != 0;
#else
  return true;
#endif
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

// Four consecutive values from shared memory as one 16-byte load (two for double): p must be
// 16-byte aligned, which the tiles below keep (rows of a multiple of 4 elements, arrays
// declared aligned). The host emulator's twin checks the alignment a GPU would fault on.
#ifndef FASTFF_EMULATED
__device__ __forceinline__ void load4(const float* p, float (&v)[4]) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
}
__device__ __forceinline__ void load4(const double* p, double (&v)[4]) {
  const double2 q0 = reinterpret_cast<const double2*>(p)[0];
  const double2 q1 = reinterpret_cast<const double2*>(p)[1];
  v[0] = q0.x; v[1] = q0.y; v[2] = q1.x; v[3] = q1.y;
}

// TF32 (tensor cores, sm_80 and newer): a float rounded to TF32's 10-bit mantissa (to nearest,
// ties away), and d += a b for one 16 x 8 x 8 tile of a warp, float accumulators. Fragments
// (PTX ISA, mma.m16n8k8 .tf32), g = lane / 4, t = lane % 4: a = A[g][t], A[g+8][t], A[g][t+4],
// A[g+8][t+4]; b = B[t][g], B[t+4][g]; d = D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1].
// Older GPUs have no TF32: the module still builds for them, and the host refuses tf32=True
// there (fastff.kernels.cuda.check_tf32), so these traps are never reached.
__device__ __forceinline__ float tf32_round(float v) {
#if __CUDA_ARCH__ >= 800
  unsigned u;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(u) : "f"(v));
  return __uint_as_float(u);
#else
  __trap();
  return v;
#endif
}
__device__ __forceinline__ void mma_tf32(float (&d)[4], const float (&a)[4], const float (&b)[2]) {
#if __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])),
        "r"(__float_as_uint(a[3])), "r"(__float_as_uint(b[0])), "r"(__float_as_uint(b[1])));
#else
  __trap();
#endif
}

// Four consecutive values to global memory: one 16-byte store where p is 16-byte aligned (a
// warp's stores then cover whole sectors), four stores otherwise.
__device__ __forceinline__ void store4(float* p, const float (&v)[4]) {
  if ((reinterpret_cast<unsigned long long>(p) & 15) == 0) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    for (int i = 0; i < 4; ++i) p[i] = v[i];
  }
}
__device__ __forceinline__ void store4(double* p, const double (&v)[4]) {
  if ((reinterpret_cast<unsigned long long>(p) & 15) == 0) {
    reinterpret_cast<double2*>(p)[0] = make_double2(v[0], v[1]);
    reinterpret_cast<double2*>(p)[1] = make_double2(v[2], v[3]);
  } else {
    for (int i = 0; i < 4; ++i) p[i] = v[i];
  }
}
#endif

// w[0..3] -= lr g[0..3], with 16-byte accesses where w is aligned (a warp's then cover whole
// sectors); the same arithmetic either way.
template <typename T>
__device__ __forceinline__ void sgd4(T* w, const T (&g)[4], T lr) {
  if ((reinterpret_cast<unsigned long long>(w) & 15) == 0) {
    T v[4];
    load4(w, v);
    for (int i = 0; i < 4; ++i) v[i] -= lr * g[i];
    store4(w, v);
  } else {
    for (int i = 0; i < 4; ++i) w[i] -= lr * g[i];
  }
}

// Types whose products may take the tensor cores (float32 only: float64 keeps its own).
template <typename T>
struct Tf32Able { static constexpr bool value = false; };
template <>
struct Tf32Able<float> { static constexpr bool value = true; };

// How a product's terms are formed (the kernels' ``products`` argument, chosen on the host by
// fastff.kernels.cuda.launchers.products): on CUDA cores in the array's type; on tensor cores
// with the operands rounded to TF32 (tf32=True: about 1e-3 relative); or on tensor cores in
// split-precision TF32, "3xTF32": each operand v is big + small with big = tf32(v) and
// small = tf32(v - big), and a b is formed as a_small b_big + a_big b_small + a_big b_big
// (the small terms first, so that they are not lost beside the big one; a_small b_small,
// about 2^-22 |a b|, is left out): float32's accuracy from three tensor-core products.
enum Products { PRODUCTS_FP32 = 0, PRODUCTS_TF32 = 1, PRODUCTS_3XTF32 = 2 };

// A value as the staging stores it: rounded to TF32 for plain TF32 products; whole for 3xTF32,
// which splits it as the fragments are read (warp_slice_mma).
template <int MODE, typename T>
__device__ __forceinline__ T staged(T v) {
  if constexpr (MODE == PRODUCTS_TF32) return tf32_round(v);
  return v;
}

// big and small TF32 parts of four (two) fragment values, in place: v becomes its big part.
template <int N>
__device__ __forceinline__ void split_tf32(float (&v)[N], float (&small)[N]) {
  for (int i = 0; i < N; ++i) {
    const float big = tf32_round(v[i]);
    small[i] = tf32_round(v[i] - big);
    v[i] = big;
  }
}

// One TK-deep slice of a warp's 32 x 16 corner (wm, wn) of a tile on tensor cores, with TF32
// or 3xTF32 products: acc[2 mi + ni] += A[wm + 16 mi + (0..15), k] B[k, wn + 8 ni + (0..7)],
// as fragments (the PTX layout above), from as[k][row] (pitch AS) and bs[k][column] (pitch BS)
// in shared memory.
template <int MODE>
__device__ __forceinline__ void warp_slice_mma(const float* as, int AS, const float* bs, int BS,
                                               int wm, int wn, int lane, float (&acc)[4][4]) {
  const int g = lane / 4, t = lane % 4;
  for (int ks = 0; ks < FASTFF_TK; ks += 8) {
    float a[2][4], b[2][2];
    for (int mi = 0; mi < 2; ++mi) {
      const float* p = as + (ks + t) * AS + wm + 16 * mi + g;
      a[mi][0] = p[0];
      a[mi][1] = p[8];
      a[mi][2] = p[4 * AS];
      a[mi][3] = p[4 * AS + 8];
    }
    for (int ni = 0; ni < 2; ++ni) {
      const float* q = bs + (ks + t) * BS + wn + 8 * ni + g;
      b[ni][0] = q[0];
      b[ni][1] = q[4 * BS];
    }
    if constexpr (MODE == PRODUCTS_3XTF32) {
      float a_small[2][4], b_small[2][2];
      for (int mi = 0; mi < 2; ++mi) split_tf32(a[mi], a_small[mi]);
      for (int ni = 0; ni < 2; ++ni) split_tf32(b[ni], b_small[ni]);
      for (int mi = 0; mi < 2; ++mi)
        for (int ni = 0; ni < 2; ++ni) {
          mma_tf32(acc[2 * mi + ni], a_small[mi], b[ni]);
          mma_tf32(acc[2 * mi + ni], a[mi], b_small[ni]);
          mma_tf32(acc[2 * mi + ni], a[mi], b[ni]);
        }
    } else {
      for (int mi = 0; mi < 2; ++mi)
        for (int ni = 0; ni < 2; ++ni) mma_tf32(acc[2 * mi + ni], a[mi], b[ni]);
    }
  }
}

// Where a warp's accumulator acc[i][c] (warp_slice_mma) lies in its tile: row and column.
__device__ __forceinline__ int fragment_row(int wm, int lane, int i, int c) {
  return wm + 16 * (i / 2) + lane / 4 + 8 * (c / 2);
}
__device__ __forceinline__ int fragment_col(int wn, int lane, int i, int c) {
  return wn + 8 * (i % 2) + 2 * (lane % 4) + c % 2;
}

// A warp's 32 x 16 corner of a tile of TM rows: (wm, wn) of warp ``warp``.
__device__ __forceinline__ int warp_row0(int warp, int tile_rows) {
  return 32 * (warp % (tile_rows / 32 > 0 ? tile_rows / 32 : 1));
}
__device__ __forceinline__ int warp_col0(int warp, int tile_rows) {
  return 16 * (warp / (tile_rows / 32 > 0 ? tile_rows / 32 : 1));
}

// parts[split] = A[:, slice] @ op(Bm)[slice, :] for one tile of C (M x Nc), where the reduction
// dimension R is cut into splits of ``chunk`` (a multiple of TK): the split-K product that
// spreads a batch-10 layer over every SM. A is (M, R); Bm is (R, Nc), or (Nc, R) with TRANS_B.
// Block: (TN / 4) x (TM / 4) threads. On CUDA cores (PRODUCTS_FP32) each thread forms 4 rows x
// 4 consecutive columns: per step of k, two 16-byte shared loads feed 16 FMAs (a 2 x 4 tile of
// scalar loads took 6 loads for 8 FMAs). On tensor cores each warp forms 32 rows x 16 columns
// (warp_slice_mma; float32 only; TM a multiple of 32, TN of 16, TK of 8:
// fastff/kernels/cuda/launchers.py checks).
// Rows of the staged slices padded by four elements: the staging loops write as (and bs with
// TRANS_B) with k fastest, which at a stride of TM (TN) words would put every thread of a warp
// in one bank; four words leave two-way conflicts there and in the TF32 fragment loads (one
// word would break the 16-byte alignment of load4).
constexpr int GEMM_AS = FASTFF_TM + 4, GEMM_BS = FASTFF_TN + 4;

// One TK-deep slice of a tile's operands, zero beyond the edges, in two halves so that the
// next slice's global loads are in flight during this slice's products (double buffering in
// registers): load_slices gives a thread its GEMM_EA values of A[r0 + r, kt + k] and GEMM_EB
// of op(Bm)[kt + k, c0 + c]; store_slices puts them in shared memory (as ``staged`` keeps
// them) as as[k][r] and bs[k][c].
constexpr int GEMM_THREADS = (FASTFF_TN / 4) * (FASTFF_TM / 4);
constexpr int GEMM_EA = (FASTFF_TM * FASTFF_TK + GEMM_THREADS - 1) / GEMM_THREADS;
constexpr int GEMM_EB = (FASTFF_TK * FASTFF_TN + GEMM_THREADS - 1) / GEMM_THREADS;

// Which entry of the B slice element e of a thread's share is: (k, c), B's rows read
// contiguously either way.
template <bool TRANS_B>
__device__ __forceinline__ void b_entry(int e, int& k, int& c) {
  if (TRANS_B) { c = e / FASTFF_TK; k = e % FASTFF_TK; }
  else { k = e / FASTFF_TN; c = e % FASTFF_TN; }
}

template <typename T, bool TRANS_B>
__device__ __forceinline__ void load_slices(const T* __restrict__ A, const T* __restrict__ Bm,
                                            int M, int R, int Nc, int kt, int k_end, int r0,
                                            int c0, int tid, T (&va)[GEMM_EA],
                                            T (&vb)[GEMM_EB]) {
#pragma unroll
  for (int q = 0; q < GEMM_EA; ++q) {
    const int e = tid + q * GEMM_THREADS;
    const int gr = r0 + e / FASTFF_TK, gk = kt + e % FASTFF_TK;
    va[q] = (e < FASTFF_TM * FASTFF_TK && gr < M && gk < k_end) ? A[(size_t)gr * R + gk] : T(0);
  }
#pragma unroll
  for (int q = 0; q < GEMM_EB; ++q) {
    const int e = tid + q * GEMM_THREADS;
    int k, c;
    b_entry<TRANS_B>(e, k, c);
    const int gk = kt + k, gc = c0 + c;
    T v = T(0);
    if (e < FASTFF_TK * FASTFF_TN && gk < k_end && gc < Nc)
      v = TRANS_B ? Bm[(size_t)gc * R + gk] : Bm[(size_t)gk * Nc + gc];
    vb[q] = v;
  }
}

template <typename T, bool TRANS_B, int MODE>
__device__ __forceinline__ void store_slices(const T (&va)[GEMM_EA], const T (&vb)[GEMM_EB],
                                             int tid, T* as, T* bs) {
#pragma unroll
  for (int q = 0; q < GEMM_EA; ++q) {
    const int e = tid + q * GEMM_THREADS, r = e / FASTFF_TK, k = e % FASTFF_TK;
    if (e < FASTFF_TM * FASTFF_TK) as[k * GEMM_AS + r] = staged<MODE>(va[q]);
  }
#pragma unroll
  for (int q = 0; q < GEMM_EB; ++q) {
    const int e = tid + q * GEMM_THREADS;
    int k, c;
    b_entry<TRANS_B>(e, k, c);
    if (e < FASTFF_TK * FASTFF_TN) bs[k * GEMM_BS + c] = staged<MODE>(vb[q]);
  }
}

// v = p[0 .. 4), zero past ``valid`` values (none read where ``valid`` <= 0): with ``vec`` (the
// row a multiple of 4 long and 16-byte aligned, so a group inside it is whole) one 16-byte
// load, one load each otherwise. The weight update stages its slices with it; the products'
// staging keeps one value a load (in groups of 4 the double instances spilled on sm_80).
template <typename T>
__device__ __forceinline__ void load_group(bool vec, const T* p, int valid, T (&v)[4]) {
  if (vec && valid > 0) {
    load4(p, v);
  } else {
    for (int i = 0; i < 4; ++i) v[i] = i < valid ? p[i] : T(0);
  }
}

template <typename T, bool TRANS_B, int MODE>
__device__ __forceinline__ void gemm_partial_tile(const T* __restrict__ A, const T* __restrict__ Bm,
                                                  T* __restrict__ parts, int M, int R, int Nc,
                                                  int chunk, T* as, T* bs) {
  constexpr int AS = GEMM_AS, BS = GEMM_BS;  // as[k][r], bs[k][c]: TK rows each
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * (FASTFF_TN / 4) + tx;
  const int r0 = blockIdx.y * FASTFF_TM, c0 = blockIdx.x * FASTFF_TN;
  const int k_begin = blockIdx.z * chunk;
  const int k_end = min(R, k_begin + chunk);
  // tensor cores: this warp's 32 x 16 corner (wm, wn) of the tile
  const int lane = tid % 32, warp = tid / 32;
  const int wm = warp_row0(warp, FASTFF_TM), wn = warp_col0(warp, FASTFF_TM);
  T acc[4][4];  // CUDA cores: acc[row][column]; tensor cores: acc[2 mi + ni][fragment element]
  for (int i = 0; i < 4; ++i)
    for (int c = 0; c < 4; ++c) acc[i][c] = T(0);
  T va[GEMM_EA], vb[GEMM_EB];  // a slice on its way from global to shared memory
  if (k_begin < k_end)
    load_slices<T, TRANS_B>(A, Bm, M, R, Nc, k_begin, k_end, r0, c0, tid, va, vb);
  for (int kt = k_begin; kt < k_end; kt += FASTFF_TK) {
    store_slices<T, TRANS_B, MODE>(va, vb, tid, as, bs);
    __syncthreads();
    if (kt + FASTFF_TK < k_end)  // the next slice's loads, in flight during these products
      load_slices<T, TRANS_B>(A, Bm, M, R, Nc, kt + FASTFF_TK, k_end, r0, c0, tid, va, vb);
    if constexpr (MODE != PRODUCTS_FP32) {
      warp_slice_mma<MODE>(as, AS, bs, BS, wm, wn, lane, acc);
    } else {
      for (int k = 0; k < FASTFF_TK; ++k) {
        T a[4], w[4];
        load4(as + k * AS + 4 * ty, a);
        load4(bs + k * BS + 4 * tx, w);
        for (int i = 0; i < 4; ++i)
          for (int c = 0; c < 4; ++c) acc[i][c] += a[i] * w[c];
      }
    }
    __syncthreads();
  }
#pragma unroll  // acc stays in registers only if every index is a constant
  for (int i = 0; i < 4; ++i) {
    if constexpr (MODE != PRODUCTS_FP32) {
      for (int c = 0; c < 4; ++c) {
        const int r = r0 + fragment_row(wm, lane, i, c), col = c0 + fragment_col(wn, lane, i, c);
        if (r < M && col < Nc) parts[((size_t)blockIdx.z * M + r) * Nc + col] = acc[i][c];
      }
    } else {
      const int r = r0 + 4 * ty + i, col = c0 + 4 * tx;
      T* p = parts + ((size_t)blockIdx.z * M + r) * Nc + col;
      if (r < M && col + 3 < Nc) {
        store4(p, acc[i]);
      } else if (r < M) {
        for (int c = 0; c < 4; ++c)
          if (col + c < Nc) p[c] = acc[i][c];
      }
    }
  }
}

// The split-K product of one tile (gemm_partial_tile) as ``products`` says (Products; float32
// only on tensor cores: float64 always on CUDA cores).
template <typename T, bool TRANS_B>
__device__ __forceinline__ void gemm_tile(const T* __restrict__ A, const T* __restrict__ Bm,
                                          T* __restrict__ parts, int M, int R, int Nc, int chunk,
                                          int products) {
  FASTFF_SHARED(T, as, FASTFF_TK * GEMM_AS);  // one set for every path
  FASTFF_SHARED(T, bs, FASTFF_TK * GEMM_BS);
  constexpr bool tc = Tf32Able<T>::value;
  if (tc && products == PRODUCTS_3XTF32)
    gemm_partial_tile<T, TRANS_B, tc ? PRODUCTS_3XTF32 : 0>(A, Bm, parts, M, R, Nc, chunk, as, bs);
  else if (tc && products == PRODUCTS_TF32)
    gemm_partial_tile<T, TRANS_B, tc ? PRODUCTS_TF32 : 0>(A, Bm, parts, M, R, Nc, chunk, as, bs);
  else
    gemm_partial_tile<T, TRANS_B, PRODUCTS_FP32>(A, Bm, parts, M, R, Nc, chunk, as, bs);
}

}  // namespace fastff
