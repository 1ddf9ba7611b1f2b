// MemoryStore: see memory_store.hpp.
#include "broker/store/memory_store.hpp"

#include <algorithm>

namespace mb::store {

MemoryStore::MemoryStore(PostFn post, std::shared_ptr<MemoryStoreData> data)
    : post_(std::move(post)),
      data_(data ? std::move(data) : std::make_shared<MemoryStoreData>()),
      self_(std::make_shared<MemoryStore*>(this)) {
  recovery_.max_message_id = data_->max_message_id;
  recovery_.max_delayed_id = data_->max_delayed_id;
  for (const auto& [key, entry] : data_->entries) {
    auto [it, fresh] = recovery_.queues.try_emplace(key.first);
    QueueSummary& summary = it->second;
    if (fresh) summary.first_seq = key.second;
    summary.last_seq = key.second;
    ++summary.entries;
  }
}

MemoryStore::~MemoryStore() {
  close();
  *self_ = nullptr;
}

void MemoryStore::put_meta(MetaKind kind, std::string_view key, std::string_view value) {
  if (closed_) return;
  data_->meta[{static_cast<std::uint8_t>(kind), std::string(key)}] = std::string(value);
  ++ops_since_flush_;
}

void MemoryStore::delete_meta(MetaKind kind, std::string_view key) {
  if (closed_) return;
  data_->meta.erase({static_cast<std::uint8_t>(kind), std::string(key)});
  ++ops_since_flush_;
}

void MemoryStore::enqueue(QueueId queue, Seq seq, MessageId message,
                          std::optional<std::string_view> blob_if_new) {
  if (closed_) return;
  auto& msg = data_->messages[message];
  if (blob_if_new) {
    msg.blob.assign(blob_if_new->data(), blob_if_new->size());
    msg.refs = 0;
    ++counters_.messages_written;
  }
  auto [it, fresh] = data_->entries.insert_or_assign({queue, seq}, MemoryStoreData::Entry{message, 0});
  if (fresh) ++msg.refs;
  if (message > data_->max_message_id) data_->max_message_id = message;
  ++counters_.entries_written;
  ++ops_since_flush_;
}

void MemoryStore::unref(MessageId message) {
  auto it = data_->messages.find(message);
  if (it == data_->messages.end()) return;
  if (it->second.refs <= 1) {
    data_->messages.erase(it);
  } else {
    --it->second.refs;
  }
}

void MemoryStore::remove_entry(QueueId queue, Seq seq, MessageId message) {
  if (closed_) return;
  if (data_->entries.erase({queue, seq}) > 0) unref(message);
  ++ops_since_flush_;
}

void MemoryStore::update_delivery_count(QueueId queue, Seq seq, MessageId message,
                                        std::uint32_t delivery_count) {
  if (closed_) return;
  data_->entries[{queue, seq}] = MemoryStoreData::Entry{message, delivery_count};
  ++ops_since_flush_;
}

void MemoryStore::purge_queue(QueueId queue, std::vector<Seq> keep) {
  if (closed_) return;
  std::sort(keep.begin(), keep.end());
  auto it = data_->entries.lower_bound({queue, 0});
  while (it != data_->entries.end() && it->first.first == queue) {
    if (std::binary_search(keep.begin(), keep.end(), it->first.second)) {
      ++it;
      continue;
    }
    unref(it->second.message_id);
    it = data_->entries.erase(it);
  }
  ++ops_since_flush_;
}

void MemoryStore::remove_entries_from(QueueId queue, Seq first_seq) {
  if (closed_) return;
  auto it = data_->entries.lower_bound({queue, first_seq});
  while (it != data_->entries.end() && it->first.first == queue) {
    unref(it->second.message_id);
    it = data_->entries.erase(it);
  }
  ++ops_since_flush_;
}

void MemoryStore::delete_queue(QueueId queue) { purge_queue(queue, {}); }

void MemoryStore::put_delayed(std::uint64_t due_ms, DelayedId id, std::string_view blob) {
  if (closed_) return;
  data_->delayed[{due_ms, id}] = std::string(blob);
  if (id > data_->max_delayed_id) data_->max_delayed_id = id;
  ++ops_since_flush_;
}

void MemoryStore::remove_delayed(std::uint64_t due_ms, DelayedId id) {
  if (closed_) return;
  data_->delayed.erase({due_ms, id});
  ++ops_since_flush_;
}

void MemoryStore::commit(DoneFn done) {
  if (closed_) {
    post_([done = std::move(done)] { done(Status::closed()); });
    return;
  }
  waiting_.push_back(std::move(done));
  if (waiting_.size() > 1) return;  // a flush task is already posted
  post_([self = self_] {
    if (*self != nullptr) (*self)->flush_group();
  });
}

// Runs on the loop: completes every commit made since the last flush, as one batch.
void MemoryStore::flush_group() {
  if (waiting_.empty()) return;
  if (ops_since_flush_ > 0) {
    ++counters_.fsyncs;
    ++counters_.write_batches;
    counters_.operations += ops_since_flush_;
    ops_since_flush_ = 0;
    if (injected_) ++counters_.failed_batches;
  }
  const Status status = injected_ ? *injected_ : Status::success();
  std::vector<DoneFn> done;
  done.swap(waiting_);
  counters_.commits += done.size();
  for (auto& fn : done) fn(status);
}

Status MemoryStore::close() {
  if (closed_) return Status::success();
  if (!waiting_.empty()) {
    // Complete the last group through post, as the flush task would have.
    const Status status = injected_ ? *injected_ : Status::success();
    std::vector<DoneFn> done;
    done.swap(waiting_);
    counters_.commits += done.size();
    post_([done = std::move(done), status] {
      for (auto& fn : done) fn(status);
    });
  }
  closed_ = true;
  return Status::success();
}

Status MemoryStore::load_entries(QueueId queue, Seq first_seq, std::size_t max_count,
                                 std::vector<QueueEntry>& out) {
  if (closed_) return Status::closed();
  for (auto it = data_->entries.lower_bound({queue, first_seq});
       it != data_->entries.end() && it->first.first == queue && max_count > 0; ++it, --max_count) {
    out.push_back(QueueEntry{it->first.second, it->second.message_id, it->second.delivery_count});
  }
  return Status::success();
}

Status MemoryStore::load_message(MessageId message, std::string& blob) {
  if (closed_) return Status::closed();
  auto it = data_->messages.find(message);
  if (it == data_->messages.end()) return Status::not_found("message " + std::to_string(message));
  blob = it->second.blob;
  return Status::success();
}

Status MemoryStore::load_messages(const std::vector<MessageId>& ids,
                                  std::vector<std::optional<std::string>>& blobs) {
  if (closed_) return Status::closed();
  blobs.assign(ids.size(), std::nullopt);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (auto it = data_->messages.find(ids[i]); it != data_->messages.end()) blobs[i] = it->second.blob;
  }
  return Status::success();
}

Status MemoryStore::load_due_delayed(std::uint64_t up_to_ms, std::size_t max_count,
                                     std::vector<DelayedRecord>& out) {
  if (closed_) return Status::closed();
  for (auto it = data_->delayed.begin();
       it != data_->delayed.end() && it->first.first <= up_to_ms && max_count > 0; ++it, --max_count) {
    out.push_back(DelayedRecord{it->first.first, it->first.second, it->second});
  }
  return Status::success();
}

Status MemoryStore::next_delayed_due(std::optional<std::uint64_t>& due_ms) {
  if (closed_) return Status::closed();
  due_ms.reset();
  if (!data_->delayed.empty()) due_ms = data_->delayed.begin()->first.first;
  return Status::success();
}

Status MemoryStore::list_meta(MetaKind kind, std::vector<MetaRecord>& out) {
  if (closed_) return Status::closed();
  const auto k = static_cast<std::uint8_t>(kind);
  for (auto it = data_->meta.lower_bound({k, std::string()}); it != data_->meta.end() && it->first.first == k;
       ++it) {
    out.push_back(MetaRecord{kind, it->first.second, it->second});
  }
  return Status::success();
}

}  // namespace mb::store
