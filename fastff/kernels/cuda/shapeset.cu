// Shapeset-3x2's counter-based stream on the GPU: the twin of fastff/data/shapeset_counter.py,
// which documents the generator; the two give the same pixels and labels bit for bit.
//
// One block of 32 threads per image (a grid-stride loop over images). Every thread draws the
// image's random numbers itself (the same Philox counters, so the same values and one control
// path); thread k computes vertex k, thread r the span of row r, thread c writes column c.
// Coordinates use __dmul_rn/__dadd_rn/__dsub_rn, which are never fused into multiply-adds, and
// a reciprocal in place of a division: the CPU twin rounds the same operations in the same
// order. The host emulator (tests/cuda_host/emu.h) defines the intrinsics as plain operations.

#define FASTFF_SHAPESET_SIZE 32
#define FASTFF_SHAPESET_MAX_VERTICES 20

namespace fastff {
struct Philox {
  unsigned k0, k1, lo, hi, draw;
};

struct Words {
  unsigned w0, w1, w2, w3;
};

// Philox4x32-10 (Random123): the counter (c0..c3) under the key (k0, k1)
__device__ __forceinline__ Words philox4x32_10(unsigned c0, unsigned c1, unsigned c2, unsigned c3,
                                               unsigned k0, unsigned k1) {
  for (int i = 0; i < 10; ++i) {
    if (i > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const unsigned long long p0 = 0xD2511F53ull * c0, p1 = 0xCD9E8D57ull * c2;
    const unsigned n0 = unsigned(p1 >> 32) ^ c1 ^ k0, n2 = unsigned(p0 >> 32) ^ c3 ^ k1;
    c1 = unsigned(p1);
    c3 = unsigned(p0);
    c0 = n0;
    c2 = n2;
  }
  return Words{c0, c1, c2, c3};
}

__device__ __forceinline__ Words next_words(Philox& s) {
  return philox4x32_10(s.lo, s.hi, s.draw++, 0u, s.k0, s.k1);
}

// a double in [0, 1) with 53 random bits (exact: no rounding)
__device__ __forceinline__ double uniform(Philox& s) {
  const Words w = next_words(s);
  return (double(w.w0 >> 5) * 67108864.0 + double(w.w1 >> 6)) * (1.0 / 9007199254740992.0);
}

// an integer in [0, n): the high word of a 32-bit draw times n
__device__ __forceinline__ int below(Philox& s, unsigned n) {
  const Words w = next_words(s);
  return int((static_cast<unsigned long long>(w.w0) * n) >> 32);
}

// the angle table's layout (shapeset_counter.angle_table)
constexpr int kVertexCos = 0, kVertexSin = 27, kCoarse = 54, kFine = 54 + 512, kRot = 54 + 1024;
constexpr int kThetaSteps = 256, kRotations = 255;

// One random object of kind (0 triangle, 1 parallelogram, 2 ellipse) into vx[:n], vy[:n] in
// shared memory; every thread makes the same draws. Returns n.
__device__ inline int random_polygon(Philox& s, int kind, const double* __restrict__ table,
                                     double* vx, double* vy) {
  const int n = kind == 0 ? 3 : (kind == 1 ? 4 : 20), off = kind == 0 ? 0 : (kind == 1 ? 3 : 7);
  const double size = FASTFF_SHAPESET_SIZE;
  const int j = below(s, kThetaSteps * kThetaSteps);
  const double ch = table[kCoarse + (j >> 8)], sh = table[kCoarse + kThetaSteps + (j >> 8)];
  const double cl = table[kFine + (j & 255)], sl = table[kFine + kThetaSteps + (j & 255)];
  const double ct = __dsub_rn(__dmul_rn(ch, cl), __dmul_rn(sh, sl));
  const double st = __dadd_rn(__dmul_rn(sh, cl), __dmul_rn(ch, sl));
  const double span = 0.8 - 0.2;  // SCALE_MAX - SCALE_MIN
  const double s1 = __dadd_rn(0.2, __dmul_rn(span, uniform(s)));
  const double s2 = __dadd_rn(0.2, __dmul_rn(span, uniform(s)));
  const double sx = __dmul_rn(s1 > s2 ? s1 : s2, size), sy = __dmul_rn(s1 < s2 ? s1 : s2, size);
  const int r = below(s, kRotations);
  const double cp = table[kRot + r], sp = table[kRot + kRotations + r];
  __syncthreads();  // every thread is done with the previous object's vertices
  for (int k = threadIdx.x; k < n; k += blockDim.x) {
    const double ck = table[kVertexCos + off + k], sk = table[kVertexSin + off + k];
    const double ca = __dsub_rn(__dmul_rn(ct, ck), __dmul_rn(st, sk));
    const double sa = __dadd_rn(__dmul_rn(st, ck), __dmul_rn(ct, sk));
    const double px = __dmul_rn(__dmul_rn(0.5, ca), sx), py = __dmul_rn(__dmul_rn(0.5, sa), sy);
    vx[k] = __dsub_rn(__dmul_rn(cp, px), __dmul_rn(sp, py));
    vy[k] = __dadd_rn(__dmul_rn(sp, px), __dmul_rn(cp, py));
  }
  __syncthreads();
  double lox = vx[0], hix = vx[0], loy = vy[0], hiy = vy[0];
  for (int k = 1; k < n; ++k) {
    lox = vx[k] < lox ? vx[k] : lox;
    hix = vx[k] > hix ? vx[k] : hix;
    loy = vy[k] < loy ? vy[k] : loy;
    hiy = vy[k] > hiy ? vy[k] : hiy;
  }
  // translate: the bounding box must lie in [1, size - 1] (1-pixel margin)
  const double roomx = __dsub_rn(size - 2.0, __dsub_rn(hix, lox));
  const double roomy = __dsub_rn(size - 2.0, __dsub_rn(hiy, loy));
  const double tx = __dadd_rn(1.0 - lox, __dmul_rn(uniform(s), roomx > 0.0 ? roomx : 0.0));
  const double ty = __dadd_rn(1.0 - loy, __dmul_rn(uniform(s), roomy > 0.0 ? roomy : 0.0));
  __syncthreads();  // every thread has read the untranslated box
  for (int k = threadIdx.x; k < n; k += blockDim.x) {
    vx[k] = __dadd_rn(vx[k], tx);
    vy[k] = __dadd_rn(vy[k], ty);
  }
  __syncthreads();
  return n;
}

// row r's columns [left, right) whose pixel centres lie inside the polygon
__device__ inline void row_span(const double* vx, const double* vy, int n, int r, int& left,
                                int& right) {
  const double yc = r + 0.5;
  double lo = __longlong_as_double(0x7ff0000000000000LL), hi = -lo;  // +inf, -inf
  for (int k = 0; k < n; ++k) {
    const int k2 = k + 1 < n ? k + 1 : 0;
    const double x1 = vx[k], y1 = vy[k], x2 = vx[k2], y2 = vy[k2];
    if (((y1 <= yc && yc <= y2) || (y2 <= yc && yc <= y1)) && y1 != y2) {
      const double t = __dmul_rn(__dsub_rn(yc, y1), __dsub_rn(x2, x1));
      const double xc = __dadd_rn(x1, __dmul_rn(t, __drcp_rn(__dsub_rn(y2, y1))));
      lo = xc < lo ? xc : lo;
      hi = xc > hi ? xc : hi;
    }
  }
  if (lo > hi) {
    left = right = 0;
    return;
  }
  const int c0 = max(0, int(ceil(lo - 0.5)));
  const int c1 = min(FASTFF_SHAPESET_SIZE, int(floor(hi - 0.5)) + 1);
  left = c0;
  right = c1 > c0 ? c1 : c0;
}

// the sum of v[0..32) (every thread the same, after a barrier)
__device__ inline int sum_rows(const int* v) {
  __syncthreads();
  int total = 0;
  for (int r = 0; r < FASTFF_SHAPESET_SIZE; ++r) total += v[r];
  return total;
}
}  // namespace fastff

// Images first .. first + n - 1 of the stream keyed (k0, k1): x[m] = level * mul + add (float32),
// labels[m], n_objects[m]. Launched with 32 threads a block.
__global__ void __launch_bounds__(FASTFF_SHAPESET_SIZE)
shapeset_render(unsigned k0, unsigned k1, unsigned long long first, int n, int balanced,
                const double* __restrict__ table, float mul, float add, float* __restrict__ x,
                long long* __restrict__ labels, long long* __restrict__ n_objects) {
  using namespace fastff;
  constexpr int S = FASTFF_SHAPESET_SIZE;
  FASTFF_SHARED(double, vx, FASTFF_SHAPESET_MAX_VERTICES);
  FASTFF_SHARED(double, vy, FASTFF_SHAPESET_MAX_VERTICES);
  FASTFF_SHARED(int, l1, S);
  FASTFF_SHARED(int, r1, S);
  FASTFF_SHARED(int, l2, S);
  FASTFF_SHARED(int, r2, S);
  FASTFF_SHARED(int, count, S);
  const int t = threadIdx.x;
  for (int m = blockIdx.x; m < n; m += gridDim.x) {
    const unsigned long long index = first + m;
    Philox s{k0, k1, unsigned(index), unsigned(index >> 32), 0u};
    int a, b;
    if (balanced) {
      const int cls = below(s, 9);
      a = cls < 3 ? cls : (cls >= 6 ? cls - 6 : (cls != 4 ? 0 : 1));
      b = cls < 3 ? -1 : (cls >= 6 ? cls - 6 : (cls == 3 ? 1 : 2));
    } else {
      a = below(s, 3);
      b = below(s, 2) == 1 ? below(s, 3) : -1;
    }
    int bg = 0 + below(s, 114 - 0 + 1), fg1 = 141 + below(s, 255 - 141 + 1),
        fg2 = 141 + below(s, 255 - 141 + 1);  // BG_LEVELS, FG_LEVELS
    if (uniform(s) < 0.5) {  // dark shapes on a light background
      bg = 255 - bg;
      fg1 = 255 - fg1;
      fg2 = 255 - fg2;
    }
    int nv = random_polygon(s, a, table, vx, vy);
    row_span(vx, vy, nv, t, l1[t], r1[t]);
    count[t] = r1[t] - l1[t];
    const int area1 = sum_rows(count);
    int placed = 1;
    if (b >= 0) {
      for (int attempt = 0; attempt <= 50; ++attempt) {  // REJECTION_MAX + 1 tries
        nv = random_polygon(s, b, table, vx, vy);
        row_span(vx, vy, nv, t, l2[t], r2[t]);
        const int lo = l1[t] > l2[t] ? l1[t] : l2[t], hi = r1[t] < r2[t] ? r1[t] : r2[t];
        __syncthreads();  // every thread has read count (sum_rows) before it is rewritten
        count[t] = hi - lo > 0 ? hi - lo : 0;
        if (sum_rows(count) <= 0.5 * area1) {  // OVERLAP_MAX
          placed = 2;
          break;
        }
      }
    }
    __syncthreads();  // every row's span is written
    for (int r = 0; r < S; ++r) {
      int level = bg;
      if (l1[r] <= t && t < r1[r]) level = fg1;
      if (placed == 2 && l2[r] <= t && t < r2[r]) level = fg2;
      x[(static_cast<long long>(m) * S + r) * S + t] = __fadd_rn(__fmul_rn(float(level), mul), add);
    }
    if (t == 0) {
      labels[m] = placed == 2 ? (b == a ? 6 + a : (a + b == 1 ? 3 : (a + b == 3 ? 4 : 5))) : a;
      if (n_objects != nullptr) n_objects[m] = placed;
    }
    __syncthreads();  // the next image rewrites the spans
  }
}
