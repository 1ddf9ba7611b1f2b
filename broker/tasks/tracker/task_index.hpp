// TaskIndex: the task tracker's index from task id to the slot of its record,
// an open-addressing hash table (linear probing, backward-shift deletion).
//
// The tracker looks up every task message, delivery and result by id among
// up to 20,000 tasks, and replaces the oldest task with each new one. A
// node-based map reads a bucket, a node and the key's heap block for each
// lookup, a cache miss each at that size; here a slot is 8 bytes in one
// array, so a lookup of a new id reads one line, and the record (whose id
// decides) only when 32 bits of the hash agree.
//
// The index holds no ids: the caller gives the id's hash with each call and
// the means to read the id of a slot's record.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

namespace mb::tasks {

class TaskIndex {
 public:
  static constexpr std::uint32_t kNone = UINT32_MAX;

  static std::uint64_t hash(std::string_view id) { return std::hash<std::string_view>{}(id); }

  // The record index stored for id, or kNone. id_of(record) gives a record's id.
  template <typename IdOf>
  std::uint32_t find(std::string_view id, std::uint64_t h, const IdOf& id_of) const {
    if (slots_.empty()) return kNone;
    const auto tag = static_cast<std::uint32_t>(h);
    for (std::size_t i = h & mask(); slots_[i].record != kEmpty; i = (i + 1) & mask()) {
      if (slots_[i].tag == tag && id_of(slots_[i].record) == id) return slots_[i].record;
    }
    return kNone;
  }

  // record must not be there already; h is its id's hash.
  void insert(std::uint32_t record, std::uint64_t h) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    place(Slot{static_cast<std::uint32_t>(h), record});
    ++size_;
  }

  // Removes record, stored with the hash h; nothing when it is not there.
  void erase(std::uint32_t record, std::uint64_t h) {
    if (slots_.empty()) return;
    std::size_t i = h & mask();
    while (slots_[i].record != record) {
      if (slots_[i].record == kEmpty) return;
      i = (i + 1) & mask();
    }
    // Backward shift: each later slot of the run moves into the hole unless
    // its home lies cyclically after the hole, so no lookup meets a gap
    // before what it seeks.
    for (std::size_t j = (i + 1) & mask(); slots_[j].record != kEmpty; j = (j + 1) & mask()) {
      const std::size_t home = slots_[j].tag & mask();
      const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
      if (!stays) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = Slot{};
    --size_;
  }

  void clear() {
    slots_.clear();
    size_ = 0;
  }
  std::size_t size() const { return size_; }

 private:
  static constexpr std::uint32_t kEmpty = kNone;
  struct Slot {
    std::uint32_t tag = 0;  // the hash's low 32 bits: its home slot, and a filter before the id is compared
    std::uint32_t record = kEmpty;
  };
  static constexpr std::size_t kMinSlots = 64;

  std::size_t mask() const { return slots_.size() - 1; }
  void place(Slot s) {
    std::size_t i = s.tag & mask();
    while (slots_[i].record != kEmpty) i = (i + 1) & mask();
    slots_[i] = s;
  }
  // Doubles the table (at most half full, so probe runs stay short).
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? kMinSlots : old.size() * 2, Slot{});
    for (const Slot& s : old)
      if (s.record != kEmpty) place(s);
  }

  std::vector<Slot> slots_;  // a power of two in size, or empty
  std::size_t size_ = 0;
};

}  // namespace mb::tasks
