#include "buffers.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fcn {

BufferPool::~BufferPool() { trim(); }

namespace {
// Buffers of 4 MB and more go in 2 MB pages where Linux allows (transparent huge pages, on
// request): a training step streams gigabytes through them (conv6's update alone 3.3 GB, its
// gradient read in runs a kilobyte apart), and with 4 KB pages it ran about 3% slower, with
// more slow outliers. `size` comes rounded to whole 2 MB pages (BufferPool::rounded).
void* allocate(size_t size) {
  constexpr size_t kHugePage = BufferPool::kHugePage, kLine = BufferPool::kLine;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (size >= 2 * kHugePage) {
    void* p = std::aligned_alloc(kHugePage, size);
    if (p) madvise(p, size, MADV_HUGEPAGE);  // only advice: refused, the pages are small
    return p;
  }
#endif
  return std::aligned_alloc(kLine, size);
}
}  // namespace

void* BufferPool::acquire(size_t bytes) {
  const size_t size = rounded(bytes);
  if (size < bytes) throw std::bad_alloc();  // too large to round
  auto it = by_size_.find(size);
  void* p = nullptr;
  if (it != by_size_.end()) {
    auto block = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) by_size_.erase(it);
    p = block->ptr;
    lru_.erase(block);
    idle_bytes_ -= size;
  } else {
    p = allocate(size);
    if (!p && !lru_.empty()) {
      // Idle buffers of other sizes may be what stands in the way.
      trim();
      p = allocate(size);
    }
    if (!p) throw std::bad_alloc();
  }
  live_bytes_ += size;
  live_buffers_++;
  peak_live_ = std::max(peak_live_, live_bytes_);
  return p;
}

void BufferPool::release(void* p, size_t bytes) noexcept {
  if (!p) return;
  const size_t size = rounded(bytes);
  live_bytes_ -= size;
  live_buffers_--;
  const size_t limit = idle_limit();
  if (size > limit) {
    std::free(p);
    return;
  }
  try {
    lru_.push_front({size, p});
    try {
      by_size_[size].push_back(lru_.begin());
    } catch (...) {
      lru_.pop_front();
      throw;
    }
  } catch (...) {
    std::free(p);  // no memory to remember it by: it is not kept
    return;
  }
  idle_bytes_ += size;
  evict_to(limit);
}

void BufferPool::evict_to(size_t bytes) noexcept {
  while (idle_bytes_ > bytes && !lru_.empty()) {
    const Block oldest = lru_.back();
    // The globally oldest idle buffer is the oldest of its size, first in its queue.
    auto it = by_size_.find(oldest.bytes);
    it->second.pop_front();
    if (it->second.empty()) by_size_.erase(it);
    lru_.pop_back();
    idle_bytes_ -= oldest.bytes;
    std::free(oldest.ptr);
  }
}

void BufferPool::trim() noexcept { evict_to(0); }

void BufferPool::set_idle_limit(size_t bytes) noexcept {
  idle_limit_ = bytes;
  limit_set_ = true;
  evict_to(bytes);
}

}  // namespace fcn
