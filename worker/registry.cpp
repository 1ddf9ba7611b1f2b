// registry.cpp: dlopen() task libraries and index their tasks by name.
#include "worker/registry.hpp"

#include <dlfcn.h>
#include <spdlog/spdlog.h>

#include <stdexcept>

namespace mb::worker {

TaskRegistry::~TaskRegistry() {
  // Libraries are deliberately not dlclose()d: thread_local and static
  // destructors inside them may still run at exit.
}

void TaskRegistry::load(const std::string& path) {
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) throw std::runtime_error("cannot load task library " + path + ": " + dlerror());
  using EntryFn = const task::TaskLibrary* (*)();
  auto entry = reinterpret_cast<EntryFn>(dlsym(h, "mb_task_library_v1"));
  if (!entry) throw std::runtime_error("task library " + path + " has no mb_task_library_v1 (not built with add_task_library?)");
  const task::TaskLibrary* lib = entry();
  if (!lib || lib->abi_version != task::kSdkAbiVersion)
    throw std::runtime_error("task library " + path + " was built for another SDK version");
  handles_.push_back(h);
  for (const auto& def : lib->registry->tasks) {
    auto [it, inserted] = tasks_.emplace(def.name, &def);
    if (!inserted) spdlog::warn("task {} from {} is already registered; keeping the first", def.name, path);
  }
  spdlog::debug("loaded {} tasks from {}", lib->registry->tasks.size(), path);
}

const task::TaskDef* TaskRegistry::find(std::string_view name) const {
  auto it = tasks_.find(name);
  return it == tasks_.end() ? nullptr : it->second;
}

std::vector<std::string> TaskRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [n, d] : tasks_) out.push_back(n);
  return out;
}

}  // namespace mb::worker
