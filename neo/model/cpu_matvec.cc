// Products that batch-1 decoding streams from memory, on CPU, built and registered by neo/model/cpu_matvec.py:
// - a few float32 rows times a low-precision weight: y [n, o] = x [n, k] . w [o, k]^T, with w held as int8 (times
//   one float32 scale per output row) or as bfloat16;
// - attention over a KV cache, per head: scores [N, s] = K [N, s, d] . q [N, d] and out [N, d] = p [N, s] . V
//   [N, s, d], the cache float32 or bfloat16 (or its bits, uint16; N = batch x heads);
// - and, for bfloat16 training (neo/model/kernels/cpu.py), a transposed copy of a bfloat16 matrix that XLA cannot
//   fold back into the dot that reads it.
//
// Batch-1 decoding reads every weight, and every cached key and value, once per token, so its speed is the rate at
// which they stream from memory. XLA's CPU backend widens a low-precision weight before its dot (several times
// slower than a float32 matvec) and runs the cache's many small per-head dots at about half of the memory's rate;
// here each vector is widened in registers right before its multiply-adds, so memory carries one or two bytes per
// value, and the work is split over XLA's own intra-op thread pool.
#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu_kernels.h"

namespace {

#if defined(__AVX512F__)
constexpr int64_t kRowBlock = 4;  // rows of x per pass: kRowBlock x kOut accumulators stay in registers
#else
constexpr int64_t kRowBlock = 2;
#endif
constexpr int64_t kOut = 4;  // weight rows per pass
constexpr int64_t kStreams = 4;  // weight rows streamed at once at batch 1

inline float widen(int8_t v) { return static_cast<float>(v); }
inline float widen(uint16_t v) {  // bfloat16 is the top half of a float32
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline vf load_w(const float* p) { return load(p); }  // float32 weights or cache: nothing to widen
inline float widen(float v) { return v; }

#if defined(__AVX512F__)
inline vf load_w(const int8_t* p) {
  return (vf)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline vf load_w(const uint16_t* p) {
  return (vf)_mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline float sum(vf v) { return _mm512_reduce_add_ps((__m512)v); }
#elif defined(__AVX2__)
inline vf load_w(const int8_t* p) {
  return (vf)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline vf load_w(const uint16_t* p) {
  return (vf)_mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
#endif

#if !defined(__AVX512F__)
#if !defined(__AVX2__)
template <typename W>
inline vf load_w(const W* p) {
  vf v;
  for (int i = 0; i < kLanes; ++i) v[i] = widen(p[i]);
  return v;
}
#endif
inline float sum(vf v) {
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}
#endif

// out[r][b] = x[r0 + r] . w[o0 + b] for R rows and B weight rows; each weight vector is widened once per pass.
// The next B weight rows are prefetched as these stream, so the memory system always has the next tile in flight.
template <int64_t R, int64_t B, typename W>
inline void tile(const float* x, int64_t k, const W* w, int64_t r0, int64_t o0, float* out) {
  vf acc[R][B] = {};
  const int64_t whole = k / kLanes * kLanes;
  for (int64_t i = 0; i < whole; i += kLanes) {
    vf wv[B];
    for (int64_t b = 0; b < B; ++b) {
      wv[b] = load_w(w + (o0 + b) * k + i);
      __builtin_prefetch(w + (o0 + B + b) * k + i);
    }
    for (int64_t r = 0; r < R; ++r) {
      const vf xv = load(x + (r0 + r) * k + i);
      for (int64_t b = 0; b < B; ++b) acc[r][b] += xv * wv[b];
    }
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t b = 0; b < B; ++b) {
      float s = sum(acc[r][b]);
      for (int64_t i = whole; i < k; ++i) s += x[(r0 + r) * k + i] * widen(w[(o0 + b) * k + i]);
      out[r * B + b] = s;
    }
}

struct Product {
  const float* x;
  int64_t n, k, o;
  const float* scale;  // per output row, or null (bfloat16)
  float* y;

  template <int64_t R, int64_t B, typename W>
  void pass(const W* w, int64_t r0, int64_t o0) const {
    float out[R * B];
    tile<R, B>(x, k, w, r0, o0, out);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t b = 0; b < B; ++b) y[(r0 + r) * o + o0 + b] = scale ? out[r * B + b] * scale[o0 + b] : out[r * B + b];
  }

  // One row of x (batch-1 decoding): kStreams weight rows, far apart, stream at once, front to back, each with four
  // accumulators and every cache line prefetched kPrefetch bytes ahead. Several streams per thread keep more of
  // memory's reads in flight than one (measured in benchmarks/README.md). Each row's sum is taken in the same order
  // whichever rows it streams beside.
  template <int64_t S, typename W>
  void streams(const W* w, int64_t u, int64_t gap) const {
    constexpr int64_t kPrefetch = 2048;
    constexpr int64_t kStep = 4 * kLanes * sizeof(W);  // bytes of weight per step
    const W* row[S];
    vf acc[S][4] = {};
    for (int64_t r = 0; r < S; ++r) row[r] = w + (u + r * gap) * k;
    int64_t i = 0;
    for (; i + 4 * kLanes <= k; i += 4 * kLanes) {
      vf xv[4];
      for (int64_t a = 0; a < 4; ++a) xv[a] = load(x + i + a * kLanes);
      for (int64_t r = 0; r < S; ++r) {
        const char* ahead = reinterpret_cast<const char*>(row[r] + i) + kPrefetch;
        for (int64_t line = 0; line < kStep; line += 64) __builtin_prefetch(ahead + line);
        for (int64_t a = 0; a < 4; ++a) acc[r][a] += xv[a] * load_w(row[r] + i + a * kLanes);
      }
    }
    for (int64_t r = 0; r < S; ++r) {
      float s = sum((acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3]));
      for (int64_t j = i; j < k; ++j) s += x[j] * widen(row[r][j]);
      const int64_t out = u + r * gap;
      y[out] = scale ? s * scale[out] : s;
    }
  }

  template <typename W>
  void one_row(const W* w, int64_t o0, int64_t o1) const {
    const int64_t gap = (o1 - o0) / kStreams;
    for (int64_t u = o0; u < o0 + gap; ++u) streams<kStreams>(w, u, gap);
    for (int64_t u = o0 + kStreams * gap; u < o1; ++u) streams<1>(w, u, 0);
  }

  // Output rows [o0, o1): weight tile by weight tile, every row of x meets a tile while it is in L1.
  template <typename W>
  void rows(const W* w, int64_t o0, int64_t o1) const {
    if (n == 1) return one_row(w, o0, o1);
    for (int64_t t = o0; t < o1; t += kOut) {
      int64_t r = 0;
      if (t + kOut <= o1) {
        for (; r + kRowBlock <= n; r += kRowBlock) pass<kRowBlock, kOut>(w, r, t);
        for (; r < n; ++r) pass<1, kOut>(w, r, t);
      } else {
        for (int64_t u = t; u < o1; ++u)
          for (r = 0; r < n; ++r) pass<1, 1>(w, r, u);
      }
    }
  }
};

// Output rows per chunk: about four chunks per thread, whole tiles.
int64_t chunk_rows(int64_t o, int64_t threads) {
  return std::max<int64_t>(16, (o + 4 * threads - 1) / (4 * threads) + kOut - 1) / kOut * kOut;
}

template <typename W>
void run(ffi::ThreadPool& pool, const Product& p, const W* w) {
  const int64_t threads = threads_of(pool), size = chunk_rows(p.o, threads);
  parallel(pool, (p.o + size - 1) / size, threads,
           [p, w, size](int64_t c) { p.rows(w, c * size, std::min(p.o, (c + 1) * size)); });
}

// Three products of one input (attention's q, k and v) in one parallel region: their chunks are claimed from one
// counter, so the threads are handed work once and finish together.
template <typename W>
void run3(ffi::ThreadPool& pool, const std::array<Product, 3>& p, const std::array<const W*, 3>& w) {
  const int64_t threads = threads_of(pool);
  std::array<int64_t, 3> size;
  std::array<int64_t, 4> first = {0, 0, 0, 0};  // each product's first chunk
  for (int i = 0; i < 3; ++i) {
    size[i] = chunk_rows(p[i].o, threads);
    first[i + 1] = first[i] + (p[i].o + size[i] - 1) / size[i];
  }
  parallel(pool, first[3], threads, [p, w, size, first](int64_t c) {
    const int i = c < first[1] ? 0 : c < first[2] ? 1 : 2;
    const int64_t o0 = (c - first[i]) * size[i];
    p[i].rows(w[i], o0, std::min(p[i].o, o0 + size[i]));
  });
}

// ---- Attention over a KV cache ------------------------------------------------------------------------------------

constexpr int64_t kCacheAhead = 1024;  // bytes of cache prefetched ahead of the rows being read
constexpr int64_t kSmall = 1 << 16;    // caches of fewer values than this are read on the calling thread alone

// scores[r] = q[r / s] . k[r] for the cache's rows r in [r0, r1) (row r: slot r % s of head r / s): one sequential
// stream through the cache.
template <typename W>
void score_rows(const float* q, const W* k, int64_t s, int64_t d, int64_t r0, int64_t r1, float* scores) {
  const int64_t line_bytes = d * static_cast<int64_t>(sizeof(W));
  for (int64_t r = r0; r < r1; ++r) {
    const float* qn = q + (r / s) * d;
    const W* row = k + r * d;
    const char* ahead = reinterpret_cast<const char*>(row) + kCacheAhead;
    for (int64_t line = 0; line < line_bytes; line += 64) __builtin_prefetch(ahead + line);
    vf a0 = {}, a1 = {};
    int64_t i = 0;
    for (; i + 2 * kLanes <= d; i += 2 * kLanes) {
      a0 += load(qn + i) * load_w(row + i);
      a1 += load(qn + i + kLanes) * load_w(row + i + kLanes);
    }
    for (; i + kLanes <= d; i += kLanes) a0 += load(qn + i) * load_w(row + i);
    float total = sum(a0 + a1);
    for (; i < d; ++i) total += qn[i] * widen(row[i]);
    scores[r] = total;
  }
}

// out[n] = sum over slots j of p[n, j] * v[n, j] for heads n in [n0, n1): each head's slots in order, one thread per
// head, so a row's result does not depend on how the work is split (a batched row equals its unbatched self).
template <typename W>
void mix_heads(const float* p, const W* v, int64_t s, int64_t d, int64_t n0, int64_t n1, float* out) {
  constexpr int64_t kBlock = 8 * kLanes;  // output values kept in registers while the slots stream
  const int64_t line_bytes = d * static_cast<int64_t>(sizeof(W));
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t c0 = 0; c0 < d; c0 += kBlock) {
      const int64_t width = std::min(kBlock, d - c0), vectors = width / kLanes;
      vf acc[8] = {};
      float tail[kLanes] = {};
      for (int64_t j = 0; j < s; ++j) {
        const W* row = v + (n * s + j) * d + c0;
        if (c0 == 0) {
          const char* ahead = reinterpret_cast<const char*>(row) + kCacheAhead;
          for (int64_t line = 0; line < line_bytes; line += 64) __builtin_prefetch(ahead + line);
        }
        const float weight = p[n * s + j];
        const vf wv = vf{} + weight;
        for (int64_t u = 0; u < vectors; ++u) acc[u] += wv * load_w(row + u * kLanes);
        for (int64_t i = vectors * kLanes; i < width; ++i) tail[i - vectors * kLanes] += weight * widen(row[i]);
      }
      for (int64_t u = 0; u < vectors; ++u) std::memcpy(out + n * d + c0 + u * kLanes, &acc[u], sizeof(vf));
      for (int64_t i = vectors * kLanes; i < width; ++i) out[n * d + c0 + i] = tail[i - vectors * kLanes];
    }
  }
}

template <typename W>
void scores_of(ffi::ThreadPool& pool, const float* q, const W* k, int64_t n, int64_t s, int64_t d, float* out) {
  const int64_t rows = n * s;
  if (rows * d < kSmall) return score_rows(q, k, s, d, 0, rows, out);
  const int64_t threads = threads_of(pool), size = std::max<int64_t>(64, (rows + 4 * threads - 1) / (4 * threads));
  parallel(pool, (rows + size - 1) / size, threads,
           [=](int64_t c) { score_rows(q, k, s, d, c * size, std::min(rows, (c + 1) * size), out); });
}

template <typename W>
void mix_of(ffi::ThreadPool& pool, const float* p, const W* v, int64_t n, int64_t s, int64_t d, float* out) {
  if (n * s * d < kSmall) return mix_heads(p, v, s, d, 0, n, out);
  parallel(pool, n, threads_of(pool), [=](int64_t h) { mix_heads(p, v, s, d, h, h + 1, out); });
}

ffi::Error check(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w) {
  if (x.size() != 2 || w.size() != 2 || x[1] != w[1])
    return ffi::Error::InvalidArgument("neo cpu_matvec: expects x [n, k] and a weight [o, k]");
  return ffi::Error::Success();
}

ffi::Error Int8(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> q, ffi::Buffer<ffi::F32> scale,
                ffi::ResultBuffer<ffi::F32> y) {
  if (auto error = check(x.dimensions(), q.dimensions()); error.failure()) return error;
  const Product p{x.typed_data(), x.dimensions()[0], x.dimensions()[1], q.dimensions()[0], scale.typed_data(),
                  y->typed_data()};
  run(pool, p, q.typed_data());
  return ffi::Error::Success();
}

ffi::Error F32(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y) {
  if (auto error = check(x.dimensions(), w.dimensions()); error.failure()) return error;
  const Product p{x.typed_data(), x.dimensions()[0], x.dimensions()[1], w.dimensions()[0], nullptr, y->typed_data()};
  run(pool, p, w.typed_data());
  return ffi::Error::Success();
}

ffi::Error Bf16(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::BF16> w,
                ffi::ResultBuffer<ffi::F32> y) {
  if (auto error = check(x.dimensions(), w.dimensions()); error.failure()) return error;
  const Product p{x.typed_data(), x.dimensions()[0], x.dimensions()[1], w.dimensions()[0], nullptr, y->typed_data()};
  run(pool, p, reinterpret_cast<const uint16_t*>(w.typed_data()));
  return ffi::Error::Success();
}

// Three weights of one kind against the same rows: check each, run them as one.
template <typename W>
ffi::Error three(ffi::ThreadPool& pool, ffi::Buffer<ffi::F32>& x, const std::array<ffi::Span<const int64_t>, 3>& dims,
                 const std::array<const W*, 3>& w, const std::array<const float*, 3>& scale,
                 const std::array<float*, 3>& y) {
  std::array<Product, 3> p;
  for (int i = 0; i < 3; ++i) {
    if (auto error = check(x.dimensions(), dims[i]); error.failure()) return error;
    p[i] = Product{x.typed_data(), x.dimensions()[0], x.dimensions()[1], dims[i][0], scale[i], y[i]};
  }
  run3(pool, p, w);
  return ffi::Error::Success();
}

ffi::Error F32x3(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w0, ffi::Buffer<ffi::F32> w1,
                 ffi::Buffer<ffi::F32> w2, ffi::ResultBuffer<ffi::F32> y0, ffi::ResultBuffer<ffi::F32> y1,
                 ffi::ResultBuffer<ffi::F32> y2) {
  return three<float>(pool, x, {w0.dimensions(), w1.dimensions(), w2.dimensions()},
                      {w0.typed_data(), w1.typed_data(), w2.typed_data()}, {nullptr, nullptr, nullptr},
                      {y0->typed_data(), y1->typed_data(), y2->typed_data()});
}

ffi::Error Bf16x3(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::BF16> w0, ffi::Buffer<ffi::BF16> w1,
                  ffi::Buffer<ffi::BF16> w2, ffi::ResultBuffer<ffi::F32> y0, ffi::ResultBuffer<ffi::F32> y1,
                  ffi::ResultBuffer<ffi::F32> y2) {
  const auto bits = [](ffi::Buffer<ffi::BF16>& w) { return reinterpret_cast<const uint16_t*>(w.typed_data()); };
  return three<uint16_t>(pool, x, {w0.dimensions(), w1.dimensions(), w2.dimensions()}, {bits(w0), bits(w1), bits(w2)},
                         {nullptr, nullptr, nullptr}, {y0->typed_data(), y1->typed_data(), y2->typed_data()});
}

ffi::Error Int8x3(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> q0, ffi::Buffer<ffi::F32> s0,
                  ffi::Buffer<ffi::S8> q1, ffi::Buffer<ffi::F32> s1, ffi::Buffer<ffi::S8> q2, ffi::Buffer<ffi::F32> s2,
                  ffi::ResultBuffer<ffi::F32> y0, ffi::ResultBuffer<ffi::F32> y1, ffi::ResultBuffer<ffi::F32> y2) {
  return three<int8_t>(pool, x, {q0.dimensions(), q1.dimensions(), q2.dimensions()},
                       {q0.typed_data(), q1.typed_data(), q2.typed_data()},
                       {s0.typed_data(), s1.typed_data(), s2.typed_data()},
                       {y0->typed_data(), y1->typed_data(), y2->typed_data()});
}

bool bf16_bits(const ffi::AnyBuffer& cache) {
  return cache.element_type() == ffi::DataType::BF16 || cache.element_type() == ffi::DataType::U16;
}

// q [N, d] (axis 2) or p [N, s] (axis 1) against a cache [N, s, d]
ffi::Error check_cache(ffi::Span<const int64_t> small, ffi::AnyBuffer cache, size_t axis) {
  const auto kv = cache.dimensions();
  if (small.size() != 2 || kv.size() != 3 || small[0] != kv[0] || small[1] != kv[axis])
    return ffi::Error::InvalidArgument("neo cpu_matvec: expects a cache [N, s, d] with q [N, d] or p [N, s]");
  if (cache.element_type() != ffi::DataType::F32 && !bf16_bits(cache))
    return ffi::Error::InvalidArgument("neo cpu_matvec: a cache must be float32 or bfloat16 (or its bits, uint16)");
  return ffi::Error::Success();
}

ffi::Error CacheScores(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::AnyBuffer k,
                       ffi::ResultBuffer<ffi::F32> scores) {
  if (auto error = check_cache(q.dimensions(), k, 2); error.failure()) return error;
  const auto kv = k.dimensions();
  if (bf16_bits(k))
    scores_of(pool, q.typed_data(), static_cast<const uint16_t*>(k.untyped_data()), kv[0], kv[1], kv[2],
              scores->typed_data());
  else
    scores_of(pool, q.typed_data(), static_cast<const float*>(k.untyped_data()), kv[0], kv[1], kv[2],
              scores->typed_data());
  return ffi::Error::Success();
}

ffi::Error CacheMix(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> p, ffi::AnyBuffer v, ffi::ResultBuffer<ffi::F32> out) {
  if (auto error = check_cache(p.dimensions(), v, 1); error.failure()) return error;
  const auto kv = v.dimensions();
  if (bf16_bits(v))
    mix_of(pool, p.typed_data(), static_cast<const uint16_t*>(v.untyped_data()), kv[0], kv[1], kv[2],
           out->typed_data());
  else
    mix_of(pool, p.typed_data(), static_cast<const float*>(v.untyped_data()), kv[0], kv[1], kv[2],
           out->typed_data());
  return ffi::Error::Success();
}

// out [c, r] = a [r, c] for an 8 x 8 tile of 16-bit values at (i, j): eight row loads, three rounds of interleaving
// (16-, 32-, then 64-bit), eight column stores.
#if defined(__SSE2__)
inline void tile8(const uint16_t* a, int64_t c, int64_t r, int64_t i, int64_t j, uint16_t* out) {
  __m128i x[8], y[8];
  for (int k = 0; k < 8; ++k) x[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + (i + k) * c + j));
  for (int k = 0; k < 4; ++k) {
    y[k] = _mm_unpacklo_epi16(x[2 * k], x[2 * k + 1]);
    y[k + 4] = _mm_unpackhi_epi16(x[2 * k], x[2 * k + 1]);
  }
  for (int k = 0; k < 2; ++k) {
    x[2 * k] = _mm_unpacklo_epi32(y[4 * k], y[4 * k + 1]);
    x[2 * k + 1] = _mm_unpackhi_epi32(y[4 * k], y[4 * k + 1]);
    x[2 * k + 4] = _mm_unpacklo_epi32(y[4 * k + 2], y[4 * k + 3]);
    x[2 * k + 5] = _mm_unpackhi_epi32(y[4 * k + 2], y[4 * k + 3]);
  }
  for (int k = 0; k < 4; ++k) {
    y[2 * k] = _mm_unpacklo_epi64(x[k], x[k + 4]);
    y[2 * k + 1] = _mm_unpackhi_epi64(x[k], x[k + 4]);
  }
  for (int k = 0; k < 8; ++k) _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (j + k) * r + i), y[k]);
}
#endif

// out [n, c, r, w] = a [n, r, c, w] for 16-bit values: each of n matrices transposed, its elements w values wide.
// (matrix, band of 32 output rows) pairs are split over the pool. A band reads the same 64 bytes of every input row,
// eight rows at a time (more, at a power-of-two row stride, would evict each other from one L1 set), and writes its
// output rows front to back (faster than square tiles on every shape of the step: benchmarks/README.md).
void transpose16(ffi::ThreadPool& pool, const uint16_t* a, int64_t n, int64_t r, int64_t c, int64_t w, uint16_t* out) {
  constexpr int64_t kBand = 32;
  const int64_t bands = (c + kBand - 1) / kBand;
  parallel(pool, n * bands, threads_of(pool), [=](int64_t job) {
    const int64_t m = job / bands, j0 = job % bands * kBand, j1 = std::min(c, j0 + kBand);
    const uint16_t* am = a + m * r * c * w;
    uint16_t* om = out + m * r * c * w;
    if (w != 1) {
      for (int64_t i0 = 0; i0 < r; i0 += kBand) {
        const int64_t i1 = std::min(r, i0 + kBand);
        for (int64_t j = j0; j < j1; ++j)
          for (int64_t i = i0; i < i1; ++i) std::memcpy(om + (j * r + i) * w, am + (i * c + j) * w, w * 2);
      }
      return;
    }
    int64_t i = 0;
#if defined(__SSE2__)
    const int64_t j8 = j0 + (j1 - j0) / 8 * 8;
    for (; i + 8 <= r; i += 8) {
      for (int64_t j = j0; j < j8; j += 8) tile8(am, c, r, i, j, om);
      for (int64_t j = j8; j < j1; ++j)
        for (int64_t k = i; k < i + 8; ++k) om[j * r + k] = am[k * c + j];
    }
#endif
    for (; i < r; ++i)
      for (int64_t j = j0; j < j1; ++j) om[j * r + i] = am[i * c + j];
  });
}

ffi::Error TransposeBf16(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> a, ffi::ResultBuffer<ffi::BF16> out) {
  const auto d = a.dimensions();
  if (d.size() != 4) return ffi::Error::InvalidArgument("neo transpose: expects a [n, r, c, w] array");
  transpose16(pool, reinterpret_cast<const uint16_t*>(a.typed_data()), d[0], d[1], d[2], d[3],
              reinterpret_cast<uint16_t*>(out->typed_data()));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(NeoTransposeBf16, TransposeBf16,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(NeoRowsTimesInt8, Int8,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(NeoRowsTimesBf16, Bf16,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(NeoCacheScores, CacheScores,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(NeoCacheMix, CacheMix,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(NeoRowsTimesF32, F32,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(NeoRowsTimesF32x3, F32x3,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(NeoRowsTimesBf16x3, Bf16x3,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(NeoRowsTimesInt8x3, Int8x3,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
