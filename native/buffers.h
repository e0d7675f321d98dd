// Native buffers, recycled by size. A training step asks for the same sizes every time, so
// after the first step nothing is allocated (and no pages are faulted in) again. Idle buffers
// are bounded in bytes, the least recently released freed first: images of ever new sizes
// (evaluation streams a split at each image's own size) would otherwise keep every size's
// buffers for good.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <unordered_map>

namespace fcn {

class BufferPool {
 public:
  static constexpr size_t kDefaultIdleLimit = size_t(1) << 30;

  BufferPool() = default;
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  ~BufferPool();

  // A 64-byte aligned buffer of at least `bytes` (throws std::bad_alloc).
  void* acquire(size_t bytes);
  // Takes back a buffer from acquire(bytes) with the same `bytes`.
  void release(void* p, size_t bytes) noexcept;
  // Frees every idle buffer.
  void trim() noexcept;
  // Sets the bound on idle bytes (else the default below).
  void set_idle_limit(size_t bytes) noexcept;

  // The bound on idle bytes: the one set, or by default the larger of 1 GiB and half the most
  // bytes ever live at once. A 512² float32 training step releases and takes back well over
  // 1 GiB of its own buffers each step; under a fixed 1 GiB the oldest of them were freed
  // and faulted in afresh every step (thousands of page faults), while an evaluation's
  // images of ever new sizes keep it at 1 GiB.
  size_t idle_limit() const { return limit_set_ ? idle_limit_ : std::max(idle_limit_, peak_live_ / 2); }
  size_t idle_bytes() const { return idle_bytes_; }
  size_t idle_buffers() const { return lru_.size(); }
  size_t live_bytes() const { return live_bytes_; }
  size_t live_buffers() const { return live_buffers_; }

  // Buffers are whole cache lines; from 4 MB on, whole 2 MB pages (see buffers.cc).
  static constexpr size_t kLine = 64, kHugePage = size_t(2) << 20;

  // What the garbage collector was last told the live buffers amount to (tensor.cc keeps it).
  size_t reported_live = 0;

 private:
  struct Block {
    size_t bytes;
    void* ptr;
  };
  // What a buffer of `bytes` takes: whole cache lines, or from 4 MB on whole 2 MB pages (see
  // buffers.cc), so that the live and idle counts are what the buffers hold (0 on overflow).
  static size_t rounded(size_t bytes) {
    const size_t unit = bytes >= 2 * kHugePage ? kHugePage : kLine;
    if (bytes > SIZE_MAX - unit) return 0;
    return (bytes == 0 ? kLine : bytes + unit - 1) / unit * unit;
  }
  void evict_to(size_t bytes) noexcept;

  std::list<Block> lru_;  // idle buffers, most recently released first
  // Per size, its idle buffers in release order (the oldest first), to reuse the newest.
  std::unordered_map<size_t, std::deque<std::list<Block>::iterator>> by_size_;
  size_t idle_limit_ = kDefaultIdleLimit;
  size_t idle_bytes_ = 0, live_bytes_ = 0, live_buffers_ = 0, peak_live_ = 0;
  bool limit_set_ = false;
};

}  // namespace fcn
