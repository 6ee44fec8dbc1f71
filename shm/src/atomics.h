// Atomic access to plain fields of the shared segment.
//
// Segment structs hold only trivially copyable fields (see layout.h); the
// fields that several threads or processes touch at once are read and
// written through these helpers, which compile to the same instructions as
// std::atomic and are understood by ThreadSanitizer.
#pragma once

#include <cstdint>

namespace cachet::detail {

template <typename T>
inline T LoadRelaxed(const T& v) {
  return __atomic_load_n(&v, __ATOMIC_RELAXED);
}
template <typename T>
inline T LoadAcquire(const T& v) {
  return __atomic_load_n(&v, __ATOMIC_ACQUIRE);
}
template <typename T>
inline void StoreRelaxed(T& v, T x) {
  __atomic_store_n(&v, x, __ATOMIC_RELAXED);
}
template <typename T>
inline void StoreRelease(T& v, T x) {
  __atomic_store_n(&v, x, __ATOMIC_RELEASE);
}
template <typename T>
inline void AddRelaxed(T& v, T delta) {
  __atomic_fetch_add(&v, delta, __ATOMIC_RELAXED);
}

}  // namespace cachet::detail
