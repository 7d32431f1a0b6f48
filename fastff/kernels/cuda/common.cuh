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
// One fence an arrival: the acq_rel atomic's release covers the whole block's writes, which
// __syncthreads orders before it (release is cumulative in the PTX memory model); a
// __threadfence before it added a second, sequentially consistent one (MEMBAR.SC.GPU). A block
// that is the only one (one K split: the forward and the fused dC/dx at batch 1024) arrives
// with no atomic at all.
__device__ __forceinline__ bool last_to_arrive(unsigned* counter, unsigned expected) {
  FASTFF_SHARED(int, last, 1);
  __syncthreads();  // alone enough where the block is the only one: its writes, its reads
  if (expected == 1) return true;
  if (threadIdx.x == 0 && threadIdx.y == 0) {
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
// small = v - big, its low bits cleared (split_tf32), and a b is formed as a_small b_big +
// a_big b_small + a_big b_big (the small terms first, so that they are not lost beside the big
// one; a_small b_small, about 2^-22 |a b|, is left out): float32's accuracy from three
// tensor-core products.
enum Products { PRODUCTS_FP32 = 0, PRODUCTS_TF32 = 1, PRODUCTS_3XTF32 = 2 };

// The big and small TF32 parts of v, for 3xTF32. big is v rounded to nearest, ties away (what
// cvt.rna.tf32.f32 gives a finite v): half a TF32 ulp added to the bits, the 13 low ones
// cleared, two integer instructions where the cvt takes four (sm_90 guards it against NaN and
// inf with a compare and a select). small = v - big is exact (at most half a TF32 ulp of v); its
// low bits are cleared, not rounded: it loses at most 2^-21 |v|, the size of the a_small
// b_small term left out. A NaN v whose bits wrap big to -0 keeps its NaN in small (v - big is
// NaN, and clearing bits keeps a quiet NaN one), so a NaN still reaches the sum; an inf v gives
// big = inf and small = NaN, as the cvt does.
__device__ __forceinline__ void split_tf32(float v, float& big, float& small) {
  big = __uint_as_float((__float_as_uint(v) + 0x1000u) & 0xFFFFE000u);
  small = __uint_as_float(__float_as_uint(v - big) & 0xFFFFE000u);
}

// Tensor-core slices in fragment order. A TK-deep slice of A (ROWS rows) and of B (COLS
// columns) is stored so that a lane's fragment of an m16n8k8 product (the PTX layout above) is
// consecutive words: A's four in one 16-byte load, B's two in one 8-byte load (the row-major
// slice took a load a value, 12 for a warp's 4 products). Entry (k, r) of A and (k, c) of B,
// with t = k % 4 and h = k / 4 % 2 (the fragment's k and k + 4), g = r % 8 (c % 8):
//   A: [k / 8][t] [r / 16] [g] [(r / 8) % 2 + 2 h]      B: [k / 8][t] [c / 8] [g] [h]
// Each [k / 8][t] row holds 2 ROWS (2 COLS) words and is padded by 8, so that the 8 lanes of a
// quarter warp's 16-byte loads (the 16 of a half warp's 8-byte ones) fall in distinct banks;
// a slice then takes TK (ROWS + 4) words, as the row-major one does. In 3xTF32 the small parts
// are a second such slice right after the first (``frag_plane`` words on).
__device__ __forceinline__ constexpr int frag_pitch(int n) { return 2 * n + 8; }
__device__ __forceinline__ constexpr int frag_plane(int n) { return FASTFF_TK / 2 * frag_pitch(n); }
template <int ROWS>
__device__ __forceinline__ int a_frag_index(int k, int r) {
  return (k / 8 * 4 + k % 4) * frag_pitch(ROWS) + r / 16 * 32 + r % 8 * 4 + (r / 8) % 2 +
         2 * ((k / 4) % 2);
}
template <int COLS>
__device__ __forceinline__ int b_frag_index(int k, int c) {
  return (k / 8 * 4 + k % 4) * frag_pitch(COLS) + c / 8 * 16 + c % 8 * 2 + (k / 4) % 2;
}

// Entry ``at`` of a staged tensor-core slice (a_frag_index, b_frag_index): rounded to TF32 for
// plain TF32 products; in 3xTF32 its big part there and its small part a plane on (ROWS: the
// slice's rows or columns).
template <int MODE, int ROWS>
__device__ __forceinline__ void stage_tensor(float* slice, int at, float v) {
  if constexpr (MODE == PRODUCTS_3XTF32) {
    float big, small;
    split_tf32(v, big, small);
    slice[at] = big;
    slice[at + frag_plane(ROWS)] = small;
  } else {
    slice[at] = tf32_round(v);
  }
}

#ifndef FASTFF_EMULATED
__device__ __forceinline__ void load2(const float* p, float (&v)[2]) {
  const float2 q = *reinterpret_cast<const float2*>(p);
  v[0] = q.x;
  v[1] = q.y;
}
#endif

// One TK-deep slice of a warp's 32 x 16 corner (wm, wn) of a tile on tensor cores, with TF32
// or 3xTF32 products: acc[2 mi + ni] += A[wm + 16 mi + (0..15), k] B[k, wn + 8 ni + (0..7)],
// from the fragment-ordered slices as (ROWS rows) and bs (COLS columns) in shared memory.
template <int MODE, int ROWS, int COLS>
__device__ __forceinline__ void warp_slice_mma(const float* as, const float* bs, int wm, int wn,
                                               int lane, float (&acc)[4][4]) {
  constexpr bool SPLIT = MODE == PRODUCTS_3XTF32;
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int ks = 0; ks < FASTFF_TK; ks += 8) {
    const int ka = (ks / 8 * 4 + t) * frag_pitch(ROWS) + g * 4;
    const int kb = (ks / 8 * 4 + t) * frag_pitch(COLS) + g * 2;
    float b[2][2], b_small[2][2];  // small: 3xTF32 only
#pragma unroll
    for (int ni = 0; ni < 2; ++ni) {
      const int at = kb + (wn / 8 + ni) * 16;
      load2(bs + at, b[ni]);
      if constexpr (SPLIT) load2(bs + frag_plane(COLS) + at, b_small[ni]);
    }
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {  // one row block's fragments live at a time
      float a[4], a_small[4];
      const int at = ka + (wm / 16 + mi) * 32;
      load4(as + at, a);
      if constexpr (SPLIT) load4(as + frag_plane(ROWS) + at, a_small);
#pragma unroll
      for (int ni = 0; ni < 2; ++ni) {
        if constexpr (SPLIT) {  // the small terms first, so that they are not lost beside the big
          mma_tf32(acc[2 * mi + ni], a_small, b[ni]);
          mma_tf32(acc[2 * mi + ni], a, b_small[ni]);
        }
        mma_tf32(acc[2 * mi + ni], a, b[ni]);
      }
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
// in one bank; four words leave two-way conflicts there (one word would break the 16-byte
// alignment of load4). The tensor cores' fragment-ordered slices take as many words.
constexpr int GEMM_AS = FASTFF_TM + 4, GEMM_BS = FASTFF_TN + 4;
// Planes of a staged slice: 3xTF32 stages big and small parts (stage_tensor), float32 only.
template <typename T>
constexpr int gemm_planes = Tf32Able<T>::value ? 2 : 1;
// A GEMM tile's staged slices, declared by the kernel (gemm_tile's as and bs), so that the two
// jobs of one launch (grad_x_and_update) share them.
#define GEMM_SHARED(T, as, bs)                                                    \
  FASTFF_SHARED(T, as, FASTFF_TK * fastff::GEMM_AS * fastff::gemm_planes<T>); \
  FASTFF_SHARED(T, bs, FASTFF_TK * fastff::GEMM_BS * fastff::gemm_planes<T>)

// One TK-deep slice of a tile's operands, zero beyond the edges, in two halves so that the
// next slice's global loads are in flight during this slice's products (double buffering in
// registers): SliceShares gives a thread its GEMM_EA values of A[r0 + r, kt + k] and GEMM_EB
// of op(Bm)[kt + k, c0 + c]; store_slices puts them in shared memory, as as[k][r] and bs[k][c]
// on CUDA cores, in fragment order (stage_tensor) on tensor cores.
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

// SliceShares<T, TRANS_B>: a thread's shares of a tile's slices, one slice after another from
// k_begin; load(k_end, va, vb) gives va[q] = the entry e = tid + q GEMM_THREADS of the A slice
// (k fastest) and vb[q] that of op(Bm)'s (k fastest for Bm^T, the column for Bm), zero past
// the edges, then moves to the next slice. The general case finds each entry's place anew.
template <typename T, bool TRANS_B, bool STRIDED>
struct SliceShares {
  const T* A;
  const T* Bm;
  int M, R, Nc, kt, r0, c0, tid;
  __device__ __forceinline__ SliceShares(const T* A_, const T* Bm_, int M_, int R_, int Nc_,
                                         int k_begin, int r0_, int c0_, int tid_)
      : A(A_), Bm(Bm_), M(M_), R(R_), Nc(Nc_), kt(k_begin), r0(r0_), c0(c0_), tid(tid_) {}
  __device__ __forceinline__ void load(int k_end, T (&va)[GEMM_EA], T (&vb)[GEMM_EB]) {
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
    kt += FASTFF_TK;
  }
};

// How many of a thread's ``count`` entries, from ``first`` (its row or column) in steps of
// ``step``, lie before ``limit``, and whose index tid + q GEMM_THREADS is under ``entries``.
__device__ __forceinline__ int shares_in(int first, int limit, int step, int count, int tid,
                                         int entries) {
  int n = first < limit ? (limit - first + step - 1) / step : 0;
  const int m = (entries - tid + GEMM_THREADS - 1) / GEMM_THREADS;
  n = n < m ? n : m;
  return n < count ? n : count;
}

// The tiles of a GPU (GEMM_THREADS a multiple of TK and TN): a thread's k (A, Bm^T) or column
// (Bm) is the same for every q, and its row (A, Bm^T) or k (Bm) steps by GEMM_THREADS / TK
// (TN). Its entries are then an address and a stride set once a tile and moved a slice at a
// time, and a count of those in range: the division, bounds and 64-bit index of each entry
// took 11 instructions, 88 of the 196 of the 3xTF32 main loop.
template <typename T, bool TRANS_B>
struct SliceShares<T, TRANS_B, true> {
  static constexpr int SA = GEMM_THREADS / FASTFF_TK;
  static constexpr int SB = GEMM_THREADS / (TRANS_B ? FASTFF_TK : FASTFF_TN);
  const T* a;  // this slice's entry q = 0 of A, and of op(Bm)
  const T* b;
  size_t a_step, b_step, b_move;  // between entries q and q + 1; b's move to the next slice
  int ak, bk, a_in, b_in;  // entry 0's k; entries whose row (column) is in range: q < a_in
  __device__ __forceinline__ SliceShares(const T* A, const T* Bm, int M, int R, int Nc,
                                         int k_begin, int r0, int c0, int tid) {
    const int ar = r0 + tid / FASTFF_TK;
    ak = k_begin + tid % FASTFF_TK;
    a = A + (size_t)ar * R + ak;
    a_step = (size_t)SA * R;
    a_in = shares_in(ar, M, SA, GEMM_EA, tid, FASTFF_TM * FASTFF_TK);
    if (TRANS_B) {  // Bm (Nc, R): entry (k, c) at c R + k, c stepping
      const int bc = c0 + tid / FASTFF_TK;
      bk = k_begin + tid % FASTFF_TK;
      b = Bm + (size_t)bc * R + bk;
      b_step = (size_t)SB * R;
      b_move = FASTFF_TK;
      b_in = shares_in(bc, Nc, SB, GEMM_EB, tid, FASTFF_TK * FASTFF_TN);
    } else {  // Bm (R, Nc): entry (k, c) at k Nc + c, k stepping (its bound checked a slice)
      const int bc = c0 + tid % FASTFF_TN;
      bk = k_begin + tid / FASTFF_TN;
      b = Bm + (size_t)bk * Nc + bc;
      b_step = (size_t)SB * Nc;
      b_move = (size_t)FASTFF_TK * Nc;
      b_in = bc < Nc ? shares_in(0, GEMM_EB, 1, GEMM_EB, tid, FASTFF_TK * FASTFF_TN) : 0;
    }
  }
  __device__ __forceinline__ void load(int k_end, T (&va)[GEMM_EA], T (&vb)[GEMM_EB]) {
#pragma unroll
    for (int q = 0; q < GEMM_EA; ++q) va[q] = q < a_in && ak < k_end ? a[q * a_step] : T(0);
#pragma unroll
    for (int q = 0; q < GEMM_EB; ++q) {
      const bool k_in = TRANS_B ? bk < k_end : bk + q * SB < k_end;
      vb[q] = q < b_in && k_in ? b[q * b_step] : T(0);
    }
    a += FASTFF_TK;
    ak += FASTFF_TK;
    b += b_move;
    bk += FASTFF_TK;
  }
};
constexpr bool GEMM_STRIDED = GEMM_THREADS % FASTFF_TK == 0 && GEMM_THREADS % FASTFF_TN == 0;

template <typename T, bool TRANS_B, int MODE>
__device__ __forceinline__ void store_slices(const T (&va)[GEMM_EA], const T (&vb)[GEMM_EB],
                                             int tid, T* as, T* bs) {
#pragma unroll
  for (int q = 0; q < GEMM_EA; ++q) {
    const int e = tid + q * GEMM_THREADS, r = e / FASTFF_TK, k = e % FASTFF_TK;
    if (e >= FASTFF_TM * FASTFF_TK) continue;
    if constexpr (MODE == PRODUCTS_FP32) as[k * GEMM_AS + r] = va[q];
    else stage_tensor<MODE, FASTFF_TM>(as, a_frag_index<FASTFF_TM>(k, r), va[q]);
  }
#pragma unroll
  for (int q = 0; q < GEMM_EB; ++q) {
    const int e = tid + q * GEMM_THREADS;
    int k, c;
    b_entry<TRANS_B>(e, k, c);
    if (e >= FASTFF_TK * FASTFF_TN) continue;
    if constexpr (MODE == PRODUCTS_FP32) bs[k * GEMM_BS + c] = vb[q];
    else stage_tensor<MODE, FASTFF_TN>(bs, b_frag_index<FASTFF_TN>(k, c), vb[q]);
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

// Where a block works: its tile in its job's grid (x, y, z) and that grid's size (nx, ny,
// nz). A launch of one job is its grid (of_launch); grad_x_and_update runs two jobs in one
// launch and deals its blocks to them in order (of_block).
struct Tile {
  int x, y, z, nx, ny, nz;
  __device__ __forceinline__ static Tile of_launch() {
    return Tile{int(blockIdx.x), int(blockIdx.y), int(blockIdx.z),
                int(gridDim.x),  int(gridDim.y),  int(gridDim.z)};
  }
  // block ``b`` of a job whose grid is (nx, ny, nz), x fastest as in a launch's grid
  __device__ __forceinline__ static Tile of_block(int b, int nx, int ny, int nz) {
    return Tile{b % nx, (b / nx) % ny, b / (nx * ny), nx, ny, nz};
  }
};

template <typename T, bool TRANS_B, int MODE>
__device__ __forceinline__ void gemm_partial_tile(const T* __restrict__ A, const T* __restrict__ Bm,
                                                  T* __restrict__ parts, int M, int R, int Nc,
                                                  int chunk, T* as, T* bs, const Tile& at) {
  constexpr int AS = GEMM_AS, BS = GEMM_BS;  // as[k][r], bs[k][c]: TK rows each
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * (FASTFF_TN / 4) + tx;
  const int r0 = at.y * FASTFF_TM, c0 = at.x * FASTFF_TN;
  const int k_begin = at.z * chunk;
  const int k_end = min(R, k_begin + chunk);
  // tensor cores: this warp's 32 x 16 corner (wm, wn) of the tile
  const int lane = tid % 32, warp = tid / 32;
  const int wm = warp_row0(warp, FASTFF_TM), wn = warp_col0(warp, FASTFF_TM);
  T acc[4][4];  // CUDA cores: acc[row][column]; tensor cores: acc[2 mi + ni][fragment element]
  for (int i = 0; i < 4; ++i)
    for (int c = 0; c < 4; ++c) acc[i][c] = T(0);
  T va[GEMM_EA], vb[GEMM_EB];  // a slice on its way from global to shared memory
  SliceShares<T, TRANS_B, GEMM_STRIDED> shares(A, Bm, M, R, Nc, k_begin, r0, c0, tid);
  if (k_begin < k_end) shares.load(k_end, va, vb);
  for (int kt = k_begin; kt < k_end; kt += FASTFF_TK) {
    store_slices<T, TRANS_B, MODE>(va, vb, tid, as, bs);
    __syncthreads();
    if (kt + FASTFF_TK < k_end)  // the next slice's loads, in flight during these products
      shares.load(k_end, va, vb);
    if constexpr (MODE != PRODUCTS_FP32) {
      warp_slice_mma<MODE, FASTFF_TM, FASTFF_TN>(as, bs, wm, wn, lane, acc);
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
        if (r < M && col < Nc) parts[((size_t)at.z * M + r) * Nc + col] = acc[i][c];
      }
    } else {
      const int r = r0 + 4 * ty + i, col = c0 + 4 * tx;
      T* p = parts + ((size_t)at.z * M + r) * Nc + col;
      if (r < M && col + 3 < Nc) {
        store4(p, acc[i]);
      } else if (r < M) {
        for (int c = 0; c < 4; ++c)
          if (col + c < Nc) p[c] = acc[i][c];
      }
    }
  }
}

// How the layer products' epilogues deal a tile's rows to its threads: each of ``columns``
// columns gets row_groups(threads, columns) threads (4 for a 64-column tile of 256 threads, 28
// for a 9-class layer), so that no thread walks a long chain of rows x splits; a unit is one
// (column, row group), at most EPILOGUE_UNITS of them. The cost's bias step deals its rows the
// same way.
constexpr int EPILOGUE_UNITS = (FASTFF_TN / 4) * (FASTFF_TM / 4) > FASTFF_TN
                                   ? (FASTFF_TN / 4) * (FASTFF_TM / 4) : FASTFF_TN;
__device__ __forceinline__ int row_groups(int threads, int columns) {
  return threads >= 2 * columns ? threads / columns : 1;
}

// The split-K epilogue's sums: s[i] = the ``splits`` partial products of the output at
// offset at[i] (where in[i]), added in split order (the same bits whatever ER is), split p's
// at parts + p split_size. The loads of ER outputs and of 4 splits are issued together (a
// thread's outputs one at a time waited a round trip for every 4 splits of each: 32 round
// trips a thread for a 64 x 64 tile of 8 splits, 8 now).
template <typename T, int ER>
__device__ __forceinline__ void add_splits(const T* __restrict__ parts, const size_t (&at)[ER],
                                           const bool (&in)[ER], int splits, size_t split_size,
                                           T (&s)[ER]) {
#pragma unroll
  for (int i = 0; i < ER; ++i) s[i] = in[i] ? parts[at[i]] : T(0);
#pragma unroll 8
  for (int p = 1; p < splits; ++p)
#pragma unroll
    for (int i = 0; i < ER; ++i)
      if (in[i]) s[i] += parts[p * split_size + at[i]];
}

// The split-K product of one tile (gemm_partial_tile) as ``products`` says (Products; float32
// only on tensor cores: float64 always on CUDA cores).
// ``as`` and ``bs``: the kernel's GEMM_SHARED, one set for every path.
template <typename T, bool TRANS_B>
__device__ __forceinline__ void gemm_tile(const T* __restrict__ A, const T* __restrict__ Bm,
                                          T* __restrict__ parts, int M, int R, int Nc, int chunk,
                                          int products, const Tile& at, T* as, T* bs) {
  constexpr bool tc = Tf32Able<T>::value;
  if (tc && products == PRODUCTS_3XTF32)
    gemm_partial_tile<T, TRANS_B, tc ? PRODUCTS_3XTF32 : 0>(A, Bm, parts, M, R, Nc, chunk, as, bs,
                                                            at);
  else if (tc && products == PRODUCTS_TF32)
    gemm_partial_tile<T, TRANS_B, tc ? PRODUCTS_TF32 : 0>(A, Bm, parts, M, R, Nc, chunk, as, bs,
                                                          at);
  else
    gemm_partial_tile<T, TRANS_B, PRODUCTS_FP32>(A, Bm, parts, M, R, Nc, chunk, as, bs, at);
}

}  // namespace fastff
