// Test-only host emulation of the CUDA features fastff's kernels use, so that the very .cu
// sources compile with g++ -std=c++20 and run on the CPU against the NumPy reference.
//
// One std::thread per CUDA thread; a barrier of atomics is __syncthreads; std::atomic_ref gives the
// atomics, with CUDA's memory orders (atomicAdd and atomicExch relaxed; the grid barrier's
// acquire and release operations as on the GPU). Two ways to run a launch (configure()):
//
// * sequential: the blocks one after another (in a permuted order when a seed is set), one
//   shared-memory buffer refilled with NaN bytes before each block;
// * concurrent: the blocks of a launch at once (in waves of at most ``wave`` blocks for an
//   ordinary launch), each with its own shared memory filled with NaN bytes, started in a
//   permuted order when a seed is set. A cooperative launch (grid barriers) always runs this
//   way and is refused (-2) when its grid exceeds the co-residency limit, as
//   cuLaunchCooperativeKernel refuses one; a block that waits at a grid barrier longer than the
//   watchdog (FASTFF_EMU_WATCHDOG_S, default 60 s) stops the process with a report instead of
//   hanging.
//
// NaN bytes make a read of shared memory that no thread wrote show up in the results; built
// with -fsanitize=thread, a missing __syncthreads or grid barrier shows up as a data race. This
// never ships as a backend: a real GPU stays the final word (its tanhf/expf round differently,
// and its scheduler is not the host's).
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define FASTFF_EMULATED 1

namespace fastff_emu {
struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// __syncthreads for one block, on atomics alone. Not std::barrier: libstdc++ parks its waiters
// on a process-wide table of mutexes, and those locks order threads of *different* blocks for
// ThreadSanitizer, which then misses races between blocks (a missing grid barrier went unseen).
class BlockBarrier {
 public:
  explicit BlockBarrier(unsigned n) : n_(n) {}
  void arrive_and_wait() {
    const unsigned gen = generation_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      generation_.store(gen + 1, std::memory_order_release);
    } else {
      while (generation_.load(std::memory_order_acquire) == gen) std::this_thread::yield();
    }
  }

 private:
  const unsigned n_;
  std::atomic<unsigned> count_{0}, generation_{0};
};

// A warp's meeting place for its collective operations (mma_tf32): its lanes' operands, and a
// barrier over the warp's threads (a block's last warp may be partial; mma refuses it).
struct WarpBox {
  explicit WarpBox(unsigned n) : size(n), bar(n) {}
  const unsigned size;
  BlockBarrier bar;
  float a[32][4], b[32][2];
};

// The warps of a block of ``n`` threads (thread t is lane t % 32 of warp t / 32, as on a GPU).
inline std::vector<std::unique_ptr<WarpBox>> make_warps(unsigned n) {
  std::vector<std::unique_ptr<WarpBox>> out;
  for (unsigned first = 0; first < n; first += 32)
    out.emplace_back(std::make_unique<WarpBox>(std::min(32u, n - first)));
  return out;
}

inline thread_local Dim3 tl_thread, tl_block;
inline thread_local WarpBox* tl_warp = nullptr;
inline Dim3 g_block_dim, g_grid_dim;
inline thread_local BlockBarrier* tl_barrier = nullptr;
inline thread_local unsigned char* tl_smem = nullptr;  // this block's shared memory
inline thread_local size_t tl_smem_offset = 0;
constexpr size_t kSharedBytes = 1 << 17;

struct Settings {
  bool concurrent = false;
  unsigned max_resident = 0;      // blocks a cooperative launch may have (0: any)
  unsigned long long seed = 0;    // nonzero: blocks in a permuted order
  unsigned wave = 64;             // blocks at once in an ordinary concurrent launch
};
inline Settings g_settings;

template <typename T>
T* shared_alloc(size_t n) {  // every thread of the block gets the same address, in call order
  size_t off = (tl_smem_offset + 15) & ~size_t(15);
  tl_smem_offset = off + n * sizeof(T);
  if (tl_smem_offset > kSharedBytes) {
    std::fprintf(stderr, "fastff CUDA emulator: a block asked for more than %zu bytes of shared memory\n",
                 kSharedBytes);
    std::_Exit(87);
  }
  return reinterpret_cast<T*>(tl_smem + off);
}

inline void fill_nan(std::vector<unsigned char>& smem) { std::memset(smem.data(), 0xFF, smem.size()); }

// The linear block indices of a grid, in launch order or permuted by the seed.
inline std::vector<unsigned> block_order(unsigned count) {
  std::vector<unsigned> order(count);
  std::iota(order.begin(), order.end(), 0u);
  if (g_settings.seed) std::shuffle(order.begin(), order.end(), std::mt19937_64(g_settings.seed));
  return order;
}

inline Dim3 block_index(unsigned linear, Dim3 grid) {
  return {linear % grid.x, (linear / grid.x) % grid.y, linear / (grid.x * grid.y)};
}

// The blocks ``linear`` at once: a worker thread per CUDA thread, a barrier and shared memory
// per block.
inline void run_together(const std::vector<unsigned>& linear, Dim3 grid, Dim3 block,
                         const std::function<void()>& body) {
  const unsigned n = block.x * block.y * block.z;
  std::vector<std::unique_ptr<BlockBarrier>> bars;
  std::vector<std::vector<std::unique_ptr<WarpBox>>> warps;
  std::vector<std::vector<unsigned char>> smem(linear.size(), std::vector<unsigned char>(kSharedBytes));
  for (size_t b = 0; b < linear.size(); ++b) {
    bars.emplace_back(std::make_unique<BlockBarrier>(n));
    warps.emplace_back(make_warps(n));
    fill_nan(smem[b]);
  }
  std::vector<std::thread> workers;
  for (size_t b = 0; b < linear.size(); ++b)
    for (unsigned t = 0; t < n; ++t)
      workers.emplace_back([&, b, t] {
        tl_thread = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
        tl_block = block_index(linear[b], grid);
        tl_barrier = bars[b].get();
        tl_warp = warps[b][t / 32].get();
        tl_smem = smem[b].data();
        tl_smem_offset = 0;
        body();
      });
  for (auto& w : workers) w.join();
}

// One block after another on the same worker threads; shared memory refilled with NaN bytes.
inline void run_in_turn(const std::vector<unsigned>& linear, Dim3 grid, Dim3 block,
                        const std::function<void()>& body) {
  const unsigned n = block.x * block.y * block.z;
  BlockBarrier bar(n);
  auto warps = make_warps(n);
  std::vector<unsigned char> smem(kSharedBytes);
  fill_nan(smem);
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < n; ++t)
    workers.emplace_back([&, t] {
      tl_thread = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
      tl_barrier = &bar;
      tl_warp = warps[t / 32].get();
      tl_smem = smem.data();
      for (unsigned b : linear) {
        tl_block = block_index(b, grid);
        tl_smem_offset = 0;
        body();
        bar.arrive_and_wait();
        if (t == 0) fill_nan(smem);  // the next block finds no value of this one
        bar.arrive_and_wait();
      }
    });
  for (auto& w : workers) w.join();
}

// Run ``body`` for every thread of every block. Returns 0, or -2 for a cooperative launch
// larger than the co-residency limit.
inline int run(Dim3 grid, Dim3 block, bool cooperative, const std::function<void()>& body) {
  const unsigned count = grid.x * grid.y * grid.z;
  if (cooperative && g_settings.max_resident && count > g_settings.max_resident) return -2;
  g_grid_dim = grid;
  g_block_dim = block;
  const std::vector<unsigned> order = block_order(count);
  if (cooperative) {
    run_together(order, grid, block, body);
  } else if (g_settings.concurrent) {
    for (size_t first = 0; first < order.size(); first += g_settings.wave) {
      const size_t last = std::min(order.size(), first + size_t(g_settings.wave));
      run_together(std::vector<unsigned>(order.begin() + first, order.begin() + last), grid,
                   block, body);
    }
  } else {
    run_in_turn(order, grid, block, body);
  }
  return 0;
}

inline double watchdog_seconds() {
  const char* s = std::getenv("FASTFF_EMU_WATCHDOG_S");
  return s ? std::atof(s) : 60.0;
}
}  // namespace fastff_emu

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define threadIdx (fastff_emu::tl_thread)
#define blockIdx (fastff_emu::tl_block)
#define blockDim (fastff_emu::g_block_dim)
#define gridDim (fastff_emu::g_grid_dim)
#define __syncthreads() (fastff_emu::tl_barrier->arrive_and_wait())
#define FASTFF_SHARED(T, name, n) T* name = fastff_emu::shared_alloc<T>(n)

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  return std::atomic_ref<unsigned>(*p).fetch_add(v, std::memory_order_relaxed);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*p).fetch_add(v, std::memory_order_relaxed);
}
inline unsigned atomicExch(unsigned* p, unsigned v) {
  return std::atomic_ref<unsigned>(*p).exchange(v, std::memory_order_relaxed);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline float __fdividef(float a, float b) { return a / b; }
inline double __drcp_rn(double b) { return 1.0 / b; }
// rounded to nearest, never fused: g++ -std=c++20 contracts no multiply-add (ISO mode)
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __longlong_as_double(long long v) {
  double d;
  std::memcpy(&d, &v, sizeof d);
  return d;
}
inline unsigned __float_as_uint(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

// The grid barrier's memory operations (common.cuh has their PTX twins).
#ifndef FASTFF_BARRIER_POLLS
#define FASTFF_BARRIER_POLLS 0
#endif
namespace fastff {
inline unsigned long long global_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}
inline unsigned load_acquire(const unsigned* p) {
  return std::atomic_ref<unsigned>(*const_cast<unsigned*>(p)).load(std::memory_order_acquire);
}
inline void store_release(unsigned* p, unsigned v) {
  std::atomic_ref<unsigned>(*p).store(v, std::memory_order_release);
}
inline unsigned fetch_add_acq_rel(unsigned* p, unsigned v) {
  return std::atomic_ref<unsigned>(*p).fetch_add(v, std::memory_order_acq_rel);
}
// common.cuh's debugging bound on a grid barrier's wait (give_up), and the wait itself, with
// the emulator's watchdog for the unbounded wait of production builds.
inline void give_up(const unsigned* p, unsigned start, unsigned* report, unsigned phase) {
  unsigned none = 0u;
  if (std::atomic_ref<unsigned>(*report).compare_exchange_strong(none, blockIdx.x + 1u)) {
    report[1] = phase + 1u;
    report[2] = load_acquire(p) - start;
    store_release(report + 3, 1u);
  }
}
inline bool wait_for_flip(const unsigned* p, unsigned old, unsigned* report, unsigned phase) {
  const auto start = std::chrono::steady_clock::now();
  const double limit = fastff_emu::watchdog_seconds();
  const unsigned top = old & 0x80000000u;
  unsigned long long polls = 0;
  while ((load_acquire(p) & 0x80000000u) == top) {
    std::this_thread::yield();
    if (FASTFF_BARRIER_POLLS) {
      if (load_acquire(report + 3) != 0u) return false;
      if (++polls >= (unsigned long long)FASTFF_BARRIER_POLLS) {
        give_up(p, top, report, phase);
        return false;
      }
    }
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited > limit) {
      // block 0 adds 2^31 - (G - 1), the others 1 (common.cuh's grid_sync)
      const unsigned grid = gridDim.x * gridDim.y * gridDim.z;
      const unsigned moved = load_acquire(p) - top, first = 0x80000000u - (grid - 1u);
      const unsigned arrived = moved < first ? moved : moved - first + 1u;
      std::fprintf(stderr,
                   "fastff CUDA emulator: deadlock: block %u waited %.1f s at a grid barrier; "
                   "%u of %u blocks arrived\n",
                   blockIdx.x, waited, arrived, grid);
      std::fflush(stderr);
      std::_Exit(86);
    }
  }
  return true;
}
}  // namespace fastff

// common.cuh's 16-byte and 8-byte shared loads, with the check of the alignment a
// GPU faults on, and its global stores of four values (one 16-byte store where aligned).
namespace fastff {
inline void check_aligned(const void* p, unsigned bytes) {
  if (reinterpret_cast<std::uintptr_t>(p) % bytes) {
    std::fprintf(stderr, "fastff CUDA emulator: misaligned address: a %u-byte access at %p\n",
                 bytes, p);
    std::_Exit(88);
  }
}
inline void load2(const float* p, float (&v)[2]) {
  check_aligned(p, 8);
  v[0] = p[0];
  v[1] = p[1];
}
template <typename T>
inline void store4(T* p, const T (&v)[4]) {
  for (int i = 0; i < 4; ++i) p[i] = v[i];
}
template <typename T>
inline void load4(const T* p, T (&v)[4]) {
  if (reinterpret_cast<std::uintptr_t>(p) % 16) {
    std::fprintf(stderr, "fastff CUDA emulator: misaligned address: a 16-byte load at %p\n",
                 static_cast<const void*>(p));
    std::_Exit(88);
  }
  // element by element: g++'s ThreadSanitizer does not check a 16-byte copy (std::memcpy
  // here hid a missing __syncthreads before the loads)
  for (int i = 0; i < 4; ++i) v[i] = p[i];
}
}  // namespace fastff

// TF32 (common.cuh's PTX twins). tf32_round: to nearest, ties away (cvt.rna.tf32.f32).
// mma_tf32: the warp's lanes meet, each hands over its fragments and forms its own outputs
// from everyone's: D[r][c] += sum_k A[r][k] B[k][c], the exact products added in double and
// rounded once. A GPU's mma.sync only reads an operand's TF32 bits; here an operand with
// other bits set stops the run (it was not rounded: the GPU would silently truncate it), and
// so does a partial warp.
namespace fastff {
inline bool is_tf32(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return (u & 0x1FFFu) == 0 || (u & 0x7F800000u) == 0x7F800000u;
}
inline float tf32_round(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  if ((u & 0x7F800000u) != 0x7F800000u) u = (u + 0x1000u) & ~0x1FFFu;  // NaN and inf kept
  std::memcpy(&v, &u, sizeof v);
  return v;
}
inline void mma_tf32(float (&d)[4], const float (&a)[4], const float (&b)[2]) {
  fastff_emu::WarpBox& w = *fastff_emu::tl_warp;
  const unsigned lane = (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32;
  if (w.size != 32) {
    std::fprintf(stderr, "fastff CUDA emulator: mma.sync in a warp of %u threads, not 32\n", w.size);
    std::_Exit(89);
  }
  for (int i = 0; i < 4; ++i) w.a[lane][i] = a[i];
  for (int i = 0; i < 2; ++i) w.b[lane][i] = b[i];
  w.bar.arrive_and_wait();
  const unsigned g = lane / 4, t = lane % 4;
  for (int q = 0; q < 4; ++q) {
    const unsigned r = g + 8 * (q / 2), c = 2 * t + q % 2;
    double sum = 0.0;
    for (unsigned k = 0; k < 8; ++k) {
      const float av = w.a[(r % 8) * 4 + k % 4][r / 8 + 2 * (k / 4)];
      const float bv = w.b[c * 4 + k % 4][k / 4];
      if (!is_tf32(av) || !is_tf32(bv)) {
        std::fprintf(stderr, "fastff CUDA emulator: an mma.sync operand that is not TF32 "
                     "(%.9g, %.9g): round it with tf32_round first\n", av, bv);
        std::_Exit(90);
      }
      sum += double(av) * double(bv);
    }
    d[q] = float(double(d[q]) + sum);
  }
  w.bar.arrive_and_wait();  // every lane has read the operands before any lane's next write
}
}  // namespace fastff

// Calls a kernel with its arguments given as CUDA does: an array of pointers to each value.
template <typename... Args, size_t... I>
void call_with(void (*kernel)(Args...), void** args, std::index_sequence<I...>) {
  kernel(*static_cast<std::remove_reference_t<Args>*>(args[I])...);
}
template <typename... Args>
void call_kernel(void (*kernel)(Args...), void** args) {
  call_with(kernel, args, std::index_sequence_for<Args...>{});
}
