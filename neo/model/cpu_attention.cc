// Causal softmax attention for float32 training on CPU, forward and backward, built and registered by
// neo/model/cpu_matvec.py and used by neo/model/kernels/cpu.py (`fused_attention`).
//
// out = softmax(q . k^T + mask) . v without scaling, causal and, in a local layer, within `window` keys of the
// query; q, k, v, out [batch, length, heads, d]. XLA CPU runs attention's per-head products of small matrices at
// ~80 GFLOP/s (a third of its 2D product rate) and writes every score and probability to memory between them. Here
// one task takes one head, its rows copied contiguous (keys and values also transposed), and each block of 64 query
// rows keeps its scores in cache from product to softmax to product, flash-style: the forward pass saves each row's
// log-sum-exp, not the probabilities, and the backward pass recomputes them. Products are register tiles of kRows
// rows x 4 vectors that skip what causality makes zero (measurements: benchmarks/README.md).
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu_kernels.h"

namespace {

#if defined(__AVX512F__)
constexpr int64_t kRows = 4;  // rows per register tile: kRows x 4 accumulators of 16 lanes
#else
constexpr int64_t kRows = 2;
#endif
constexpr int64_t kBlock = 64;  // query rows per block

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// C[m, :] (+)= sum_k A(m, k) B[k, :] for M rows and V vectors of columns: A(m, k) = a[m * am + k * ak], read one
// value at a time and broadcast; B's rows b + k * ldb and C's rows c + m * ldc contiguous.
template <int64_t M, int V, bool Acc>
inline void tile(const float* a, int64_t am, int64_t ak, const float* b, int64_t ldb, int64_t kn, float* c,
                 int64_t ldc) {
  vf acc[M][V];
  for (int64_t m = 0; m < M; ++m)
    for (int v = 0; v < V; ++v) acc[m][v] = Acc ? load(c + m * ldc + v * kLanes) : vf{};
  for (int64_t k = 0; k < kn; ++k) {
    vf bv[V];
    for (int v = 0; v < V; ++v) bv[v] = load(b + k * ldb + v * kLanes);
    for (int64_t m = 0; m < M; ++m) {
      const vf s = vf{} + a[m * am + k * ak];
      for (int v = 0; v < V; ++v) acc[m][v] += s * bv[v];
    }
  }
  for (int64_t m = 0; m < M; ++m)
    for (int v = 0; v < V; ++v) store(c + m * ldc + v * kLanes, acc[m][v]);
}

template <int64_t M, bool Acc>
inline void tiles(int v, const float* a, int64_t am, int64_t ak, const float* b, int64_t ldb, int64_t kn, float* c,
                  int64_t ldc) {
  switch (v) {
    case 4: return tile<M, 4, Acc>(a, am, ak, b, ldb, kn, c, ldc);
    case 3: return tile<M, 3, Acc>(a, am, ak, b, ldb, kn, c, ldc);
    case 2: return tile<M, 2, Acc>(a, am, ak, b, ldb, kn, c, ldc);
    default: return tile<M, 1, Acc>(a, am, ak, b, ldb, kn, c, ldc);
  }
}

// C [rows, n] (+)= A(rows, k) . B [k, n], n a multiple of kLanes (see `tile` for the operands' strides), skipping
// what causality makes zero: `span(m, r)` gives the rows [m, m + r) their range of k, [lo, hi), and the columns
// they need, [0, cols); columns past cols are not written.
template <bool Acc, typename Span>
void product(const float* a, int64_t am, int64_t ak, const float* b, int64_t ldb, int64_t rows, int64_t n, float* c,
             int64_t ldc, Span span) {
  for (int64_t n0 = 0; n0 < n; n0 += 4 * kLanes) {
    auto run = [&](auto r, int64_t m) {
      const auto [lo, hi, cols] = span(m, decltype(r)::value);
      const int64_t v = std::min<int64_t>(4, (std::min(cols, n) - n0) / kLanes);
      if (v > 0 && hi > lo)
        tiles<decltype(r)::value, Acc>(static_cast<int>(v), a + m * am + lo * ak, am, ak, b + lo * ldb + n0, ldb,
                                       hi - lo, c + m * ldc + n0, ldc);
    };
    int64_t m = 0;
    for (; m + kRows <= rows; m += kRows) run(std::integral_constant<int64_t, kRows>{}, m);
    for (; m < rows; ++m) run(std::integral_constant<int64_t, 1>{}, m);
  }
}

struct Bounds {
  int64_t lo, hi, cols;
};

// exp(x) lane by lane (Cephes' expf: 2^n times a degree-6 polynomial on [-ln2/2, ln2/2], ~1 ulp); 0 below -87.
inline vf exp_of(vf x) {
  const vi under = x < -87.0f;
  x = x > 88.0f ? vf{} + 88.0f : x;
  x = under ? vf{} : x;
  const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const vf r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  vf p = vf{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return under ? vf{} : p * scale;
}

inline vf iota() {
  vf v;
  for (int i = 0; i < kLanes; ++i) v[i] = static_cast<float>(i);
  return v;
}

// One head's operands: row i of q, k, v, out (or their gradients) at base + i * stride.
struct Shape {
  int64_t length, heads, d, window;  // window 0: none
  int64_t stride() const { return heads * d; }
  int64_t padded() const { return round_up(length, kLanes); }
  // the row length of the key-indexed buffers: a vector past `padded`, so that their rows are not a power of two
  // floats apart (whose lines would share a few L1 sets and evict each other)
  int64_t pitch() const { return padded() + kLanes; }
  int64_t first_key(int64_t row) const { return window > 0 ? std::max<int64_t>(0, row - window + 1) : 0; }
};

// The keys a block of query rows [i0, i1) may see, widened to whole vectors: [k0, k1).
inline void key_span(const Shape& s, int64_t i0, int64_t i1, int64_t& k0, int64_t& k1) {
  k0 = s.first_key(i0) / kLanes * kLanes;
  k1 = round_up(i1, kLanes);
}

// t [d, pitch] = rows [0, padded) of x (stride `stride`) transposed, zero past `length`: in squares of 16 x 16,
// whose 16 output lines stay in L1 while they fill.
void transpose_rows(const float* x, const Shape& s, float* t) {
  constexpr int64_t kSquare = 16;
  const int64_t p = s.pitch(), st = s.stride();
  for (int64_t j0 = 0; j0 < s.padded(); j0 += kSquare)
    for (int64_t e0 = 0; e0 < s.d; e0 += kSquare) {
      const int64_t e1 = std::min(s.d, e0 + kSquare), j1 = std::min(s.length, j0 + kSquare);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t e = e0; e < e1; ++e) t[e * p + j] = x[j * st + e];
      for (int64_t j = j1; j < j0 + kSquare; ++j)
        for (int64_t e = e0; e < e1; ++e) t[e * p + j] = 0.0f;
    }
}

// One head's rows [length, d] of x (stride `stride`), contiguous: products then read them from L1 and L2 without the
// cache-set conflicts of rows `stride` floats apart.
void rows_of(const float* x, const Shape& s, float* out) {
  for (int64_t j = 0; j < s.length; ++j) std::memcpy(out + j * s.d, x + j * s.stride(), s.d * sizeof(float));
}

// The first column past a row's last visible key, in whole vectors.
inline int64_t row_end(int64_t row) { return round_up(row + 1, kLanes); }

// scores [i0, i1) x [k0, k1) in rows of `pitch` (columns by key index): x's contiguous rows times t's columns,
// each row only as far as `row_end`.
void scores_of(const float* x, const float* t, const Shape& s, int64_t i0, int64_t i1, int64_t k0, int64_t k1,
               float* out) {
  const int64_t p = s.pitch();
  product<false>(x + i0 * s.d, s.d, 1, t + k0, p, i1 - i0, k1 - k0, out + k0, p,
                 [=](int64_t m, int64_t r) { return Bounds{0, s.d, row_end(i0 + m + r - 1) - k0}; });
}

inline float largest(vf v) {
  float m = v[0];
  for (int l = 1; l < kLanes; ++l) m = std::max(m, v[l]);
  return m;
}

inline float total(vf v) {
  float t = 0.0f;
  for (int l = 0; l < kLanes; ++l) t += v[l];
  return t;
}

// Each row's scores to exp(score - shift) in place where the key is visible, else 0. With shift null the shift is
// the row's own maximum, and the row's log-sum-exp goes to lse and the reciprocal of its sum to inverse.
void probabilities(float* scores, const Shape& s, int64_t i0, int64_t i1, int64_t k0, int64_t k1, const float* shift,
                   float* lse, float* inverse) {
  const int64_t p = s.pitch();
  const vf lanes = iota(), none = vf{} - INFINITY;
  for (int64_t i = i0; i < i1; ++i) {
    float* row = scores + (i - i0) * p;
    const float lo = static_cast<float>(s.first_key(i)), hi = static_cast<float>(i);
    float m;
    if (shift) {
      m = shift[i];
    } else {
      vf most = none;
      for (int64_t j = k0; j < std::min(k1, row_end(i)); j += kLanes) {
        const vf key = lanes + static_cast<float>(j), x = load(row + j);
        most = (key >= lo) & (key <= hi) & (x > most) ? x : most;
      }
      m = largest(most);
    }
    vf sum{};
    const int64_t end = std::min(k1, row_end(i));
    for (int64_t j = k0; j < end; j += kLanes) {
      const vf key = lanes + static_cast<float>(j);
      const vf e = (key >= lo) & (key <= hi) ? exp_of(load(row + j) - m) : vf{};
      sum += e;
      store(row + j, e);
    }
    for (int64_t j = end; j < k1; j += kLanes) store(row + j, vf{});
    if (shift) continue;
    const float t = total(sum);
    lse[i] = m + std::log(t);
    inverse[i - i0] = 1.0f / t;
  }
}

// This thread's working memory of at least `floats`, kept from call to call: a head's buffers cost no allocation,
// page faults or zero-filling (they are written before they are read; the gradient sums are zeroed explicitly).
float* scratch(size_t floats) {
  thread_local std::vector<float> memory;
  if (memory.size() < floats) memory.resize(floats);
  return memory.data();
}

// Query rows [i0 + m, i0 + m + r) contract over keys [k0, i0 + m + r): the keys they may see.
inline auto before(int64_t i0, int64_t k0, int64_t d) {
  return [=](int64_t m, int64_t r) { return Bounds{0, i0 + m + r - k0, d}; };
}

// Forward: one (batch x head) per task, its keys transposed once for all of its query blocks.
void forward(ffi::ThreadPool& pool, const float* q, const float* k, const float* v, const Shape& s, int64_t n,
             float* out, float* lse) {
  const int64_t p = s.pitch(), st = s.stride();
  parallel(pool, n * s.heads, threads_of(pool), [=](int64_t head) {
    const int64_t base = head / s.heads * s.length * st + head % s.heads * s.d;  // [b, 0, h, 0]
    const int64_t rows = s.length * s.d;
    float* const kt = scratch(s.d * p + 2 * rows + kBlock * p + kBlock);
    float *const qc = kt + s.d * p, *const vc = qc + rows, *const scores = vc + rows;
    float* const inverse = scores + kBlock * p;
    transpose_rows(k + base, s, kt);
    rows_of(q + base, s, qc);
    rows_of(v + base, s, vc);
    for (int64_t i0 = 0; i0 < s.length; i0 += kBlock) {
      const int64_t i1 = std::min(s.length, i0 + kBlock);
      int64_t k0, k1;
      key_span(s, i0, i1, k0, k1);
      scores_of(qc, kt, s, i0, i1, k0, k1, scores);
      probabilities(scores, s, i0, i1, k0, k1, nullptr, lse + head * s.length, inverse);
      // out rows = probabilities . v over keys [k0, i1) (the rest are 0), then divided by the rows' sums
      float* o = out + base + i0 * st;
      product<false>(scores + k0, p, 1, vc + k0 * s.d, s.d, i1 - i0, s.d, o, st, before(i0, k0, s.d));
      for (int64_t i = 0; i < i1 - i0; ++i) {
        const vf inv = vf{} + inverse[i];
        for (int64_t e = 0; e < s.d; e += kLanes) store(o + i * st + e, load(o + i * st + e) * inv);
      }
    }
  });
}

// Backward: one (batch x head) per task, its key and value gradients summed over its query blocks in the task.
void backward(ffi::ThreadPool& pool, const float* q, const float* k, const float* v, const float* out,
              const float* lse, const float* d_out, const Shape& s, int64_t n, float* dq, float* dk, float* dv) {
  const int64_t p = s.pitch(), st = s.stride();
  parallel(pool, n * s.heads, threads_of(pool), [=](int64_t head) {
    const int64_t base = head / s.heads * s.length * st + head % s.heads * s.d;
    const float* shift = lse + head * s.length;
    const int64_t rows = s.length * s.d;
    float* const kt = scratch(2 * s.d * p + 2 * kBlock * p + s.length + 5 * rows);
    float *const vt = kt + s.d * p, *const probs = vt + s.d * p, *const grads = probs + kBlock * p;
    float *const delta = grads + kBlock * p, *const qc = delta + s.length, *const kc = qc + rows, *const dc = kc + rows;
    float *const dk_rows = dc + rows, *const dv_rows = dk_rows + rows;
    std::fill(dk_rows, dv_rows + rows, 0.0f);
    transpose_rows(k + base, s, kt);
    transpose_rows(v + base, s, vt);
    rows_of(q + base, s, qc);
    rows_of(k + base, s, kc);
    rows_of(d_out + base, s, dc);
    for (int64_t i = 0; i < s.length; ++i) {  // rowsum(dP * P) = dO . O
      float t = 0.0f;
      for (int64_t e = 0; e < s.d; ++e) t += d_out[base + i * st + e] * out[base + i * st + e];
      delta[i] = t;
    }
    for (int64_t i0 = 0; i0 < s.length; i0 += kBlock) {
      const int64_t i1 = std::min(s.length, i0 + kBlock), block = i1 - i0;
      int64_t k0, k1;
      key_span(s, i0, i1, k0, k1);
      scores_of(qc, kt, s, i0, i1, k0, k1, probs);
      probabilities(probs, s, i0, i1, k0, k1, shift, nullptr, nullptr);
      scores_of(dc, vt, s, i0, i1, k0, k1, grads);  // dP = dO . v^T
      for (int64_t i = i0; i < i1; ++i) {  // dS = P * (dP - delta)
        float* g = grads + (i - i0) * p;
        const float* pr = probs + (i - i0) * p;
        const vf di = vf{} + delta[i];
        const int64_t end = std::min(k1, row_end(i));
        for (int64_t j = k0; j < end; j += kLanes) store(g + j, load(pr + j) * (load(g + j) - di));
        for (int64_t j = end; j < k1; j += kLanes) store(g + j, vf{});
      }
      const int64_t keys = i1 - k0;  // keys past the block's last row have P = dS = 0
      product<false>(grads + k0, p, 1, kc + k0 * s.d, s.d, block, s.d, dq + base + i0 * st, st, before(i0, k0, s.d));
      // key rows [j, j + r) gather from query rows i >= j only
      const auto after = [=](int64_t m, int64_t) { return Bounds{std::max<int64_t>(0, k0 + m - i0), block, s.d}; };
      product<true>(probs + k0, 1, p, dc + i0 * s.d, s.d, keys, s.d, dv_rows + k0 * s.d, s.d, after);
      product<true>(grads + k0, 1, p, qc + i0 * s.d, s.d, keys, s.d, dk_rows + k0 * s.d, s.d, after);
    }
    for (int64_t j = 0; j < s.length; ++j) {
      std::memcpy(dk + base + j * st, dk_rows + j * s.d, s.d * sizeof(float));
      std::memcpy(dv + base + j * st, dv_rows + j * s.d, s.d * sizeof(float));
    }
  });
}

ffi::Error shape_of(ffi::Span<const int64_t> dims, int64_t window, Shape& s, int64_t& n) {
  if (dims.size() != 4 || dims[3] % kLanes != 0)
    return ffi::Error::InvalidArgument("neo attention: expects [batch, length, heads, d], d a multiple of 16");
  n = dims[0];
  s = Shape{dims[1], dims[2], dims[3], window};
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                   int64_t window, ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> lse) {
  Shape s;
  int64_t n;
  if (auto e = shape_of(q.dimensions(), window, s, n); e.failure()) return e;
  forward(pool, q.typed_data(), k.typed_data(), v.typed_data(), s, n, out->typed_data(), lse->typed_data());
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                    ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> d_out, int64_t window,
                    ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv) {
  Shape s;
  int64_t n;
  if (auto e = shape_of(q.dimensions(), window, s, n); e.failure()) return e;
  backward(pool, q.typed_data(), k.typed_data(), v.typed_data(), out.typed_data(), lse.typed_data(),
           d_out.typed_data(), s, n, dq->typed_data(), dk->typed_data(), dv->typed_data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(NeoAttentionF32, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("window")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(NeoAttentionF32Grad, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("window")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
