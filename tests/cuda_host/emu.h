// Test-only host emulation of the CUDA features fastff's kernels use, so that the very .cu
// sources compile with g++ -std=c++20 and run on the CPU against the NumPy reference.
//
// One std::thread per CUDA thread of a block; the blocks of a launch run one after another, so
// the block's shared memory (FASTFF_SHARED) is one buffer; std::barrier is __syncthreads;
// std::atomic_ref gives atomicAdd. Built with -fsanitize=thread, a missing __syncthreads shows
// up as a data race. This never ships as a backend: a real GPU stays the final word (its
// tanhf/expf round differently, and its memory model is not the host's).
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace fastff_emu {
struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local Dim3 tl_thread, tl_block;
inline Dim3 g_block_dim, g_grid_dim;
inline thread_local std::barrier<>* tl_barrier = nullptr;
inline thread_local size_t tl_smem_offset = 0;
inline std::vector<unsigned char> g_smem(1 << 20);

template <typename T>
T* shared_alloc(size_t n) {  // every thread of the block gets the same address, in call order
  size_t off = (tl_smem_offset + 15) & ~size_t(15);
  tl_smem_offset = off + n * sizeof(T);
  return reinterpret_cast<T*>(g_smem.data() + off);
}

// Run ``body`` for every thread of every block: a worker thread per CUDA thread, the blocks in
// order, a barrier between blocks (the next block reuses the shared memory).
inline void run(Dim3 grid, Dim3 block, const std::function<void()>& body) {
  g_grid_dim = grid;
  g_block_dim = block;
  const unsigned n = block.x * block.y * block.z;
  std::barrier<> bar(n);
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < n; ++t)
    workers.emplace_back([&, t] {
      tl_thread = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
      tl_barrier = &bar;
      for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
          for (unsigned bx = 0; bx < grid.x; ++bx) {
            tl_block = {bx, by, bz};
            tl_smem_offset = 0;
            body();
            bar.arrive_and_wait();
          }
    });
  for (auto& w : workers) w.join();
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
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
inline float __fdividef(float a, float b) { return a / b; }
inline double __drcp_rn(double b) { return 1.0 / b; }
inline double __longlong_as_double(long long v) {
  double d;
  std::memcpy(&d, &v, sizeof d);
  return d;
}

// Calls a kernel with its arguments given as CUDA does: an array of pointers to each value.
template <typename... Args, size_t... I>
void call_with(void (*kernel)(Args...), void** args, std::index_sequence<I...>) {
  kernel(*static_cast<std::remove_reference_t<Args>*>(args[I])...);
}
template <typename... Args>
void call_kernel(void (*kernel)(Args...), void** args) {
  call_with(kernel, args, std::index_sequence_for<Args...>{});
}
