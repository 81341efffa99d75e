// What neo's CPU kernels share (cpu_matvec.cc, cpu_attention.cc): the vector type of this CPU's widest float
// registers, and work split over XLA's own intra-op thread pool.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif

typedef float vf __attribute__((vector_size(kLanes * 4)));
typedef int32_t vi __attribute__((vector_size(kLanes * 4)));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// body(c) for every chunk c < count, chunks claimed from a shared counter by the calling thread and by tasks on
// XLA's pool. A task that starts late finds nothing left; the caller waits only for chunks already claimed.
struct Chunks {
  std::atomic<int64_t> next{0}, done{0};
  int64_t count = 0;
};

template <typename Body>
void parallel(ffi::ThreadPool& pool, int64_t count, int64_t threads, Body body) {
  auto chunks = std::make_shared<Chunks>();
  chunks->count = count;
  auto drain = [chunks, body]() {
    for (int64_t c; (c = chunks->next.fetch_add(1)) < chunks->count;) {
      body(c);
      chunks->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 1; t < std::min(threads, count); ++t) pool.Schedule([drain] { drain(); });
  drain();
  while (chunks->done.load(std::memory_order_acquire) < count) std::this_thread::yield();
}

inline int64_t threads_of(ffi::ThreadPool& pool) { return std::max<int64_t>(1, pool.num_threads()); }
