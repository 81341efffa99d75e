// A few float32 rows times a low-precision weight on CPU: y [n, o] = x [n, k] . w [o, k]^T, with w held as int8
// (times one float32 scale per output row) or as bfloat16. Built and registered by neo/model/cpu_matvec.py.
//
// Batch-1 decoding reads every weight once per token, so its speed is the rate at which the weights stream from
// memory. XLA's CPU backend widens a low-precision weight before its dot (several times slower than a float32
// matvec); here each weight vector is widened in registers right before its multiply-adds, so memory carries one or
// two bytes per weight. Work is split over output rows on XLA's own intra-op thread pool.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int64_t kRowBlock = 4;  // rows of x per pass: kRowBlock x kOut accumulators stay in registers
#else
constexpr int kLanes = 8;
constexpr int64_t kRowBlock = 2;
#endif
constexpr int64_t kOut = 4;  // weight rows per pass

typedef float vf __attribute__((vector_size(kLanes * 4)));

inline float widen(int8_t v) { return static_cast<float>(v); }
inline float widen(uint16_t v) {  // bfloat16 is the top half of a float32
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline vf load_x(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

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
      const vf xv = load_x(x + (r0 + r) * k + i);
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

  // One row of x (batch-1 decoding): each weight row streams once, front to back, four vectors per step with four
  // accumulators, each cache line prefetched kPrefetch bytes ahead. One sequential stream per thread reads memory
  // fastest. The distances are measured (benchmarks/README.md): bfloat16 streams faster at 1 KiB, int8 at 2 KiB.
  template <typename W>
  void one_row(const W* w, int64_t o0, int64_t o1) const {
    constexpr int64_t kPrefetch = sizeof(W) == 1 ? 2048 : 1024;
    constexpr int64_t kStep = 4 * kLanes * sizeof(W);  // bytes of weight per step
    for (int64_t u = o0; u < o1; ++u) {
      const W* row = w + u * k;
      vf a0 = {}, a1 = {}, a2 = {}, a3 = {};
      int64_t i = 0;
      for (; i + 4 * kLanes <= k; i += 4 * kLanes) {
        const char* ahead = reinterpret_cast<const char*>(row + i) + kPrefetch;
        for (int64_t line = 0; line < kStep; line += 64) __builtin_prefetch(ahead + line);
        a0 += load_x(x + i) * load_w(row + i);
        a1 += load_x(x + i + kLanes) * load_w(row + i + kLanes);
        a2 += load_x(x + i + 2 * kLanes) * load_w(row + i + 2 * kLanes);
        a3 += load_x(x + i + 3 * kLanes) * load_w(row + i + 3 * kLanes);
      }
      float s = sum((a0 + a1) + (a2 + a3));
      for (; i < k; ++i) s += x[i] * widen(row[i]);
      y[u] = scale ? s * scale[u] : s;
    }
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

// Chunks of output rows, claimed from a shared counter by the calling thread and by tasks on XLA's pool. A task that
// starts late finds nothing left; the caller waits only for chunks already claimed.
struct Chunks {
  std::atomic<int64_t> next{0}, done{0};
  int64_t count = 0, size = 0;
};

template <typename W>
void run(ffi::ThreadPool& pool, const Product& p, const W* w) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  auto chunks = std::make_shared<Chunks>();
  chunks->size = std::max<int64_t>(16, (p.o + 4 * threads - 1) / (4 * threads) + kOut - 1) / kOut * kOut;
  chunks->count = (p.o + chunks->size - 1) / chunks->size;
  auto drain = [chunks, p, w]() {
    for (int64_t c; (c = chunks->next.fetch_add(1)) < chunks->count;) {
      p.rows(w, c * chunks->size, std::min(p.o, (c + 1) * chunks->size));
      chunks->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 1; t < std::min(threads, chunks->count); ++t) pool.Schedule([drain] { drain(); });
  drain();
  while (chunks->done.load(std::memory_order_acquire) < chunks->count) std::this_thread::yield();
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

ffi::Error Bf16(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::BF16> w,
                ffi::ResultBuffer<ffi::F32> y) {
  if (auto error = check(x.dimensions(), w.dimensions()); error.failure()) return error;
  const Product p{x.typed_data(), x.dimensions()[0], x.dimensions()[1], w.dimensions()[0], nullptr, y->typed_data()};
  run(pool, p, reinterpret_cast<const uint16_t*>(w.typed_data()));
  return ffi::Error::Success();
}

}  // namespace

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
