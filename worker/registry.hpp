// registry.hpp: the tasks the worker can run, loaded from task libraries with
// dlopen(). Each library exports mb_task_library_v1() (see
// include/minibroker/task.hpp); its TaskDefs stay owned by the library, which
// stays loaded for the life of the TaskRegistry.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <minibroker/task.hpp>

namespace mb::worker {

class TaskRegistry {
 public:
  TaskRegistry() = default;
  TaskRegistry(const TaskRegistry&) = delete;
  TaskRegistry& operator=(const TaskRegistry&) = delete;
  ~TaskRegistry();

  // Loads a library; throws std::runtime_error naming the path and the reason
  // (dlopen error, missing entry point, SDK version mismatch). A task name
  // already registered by an earlier library keeps its first definition.
  void load(const std::string& path);

  const task::TaskDef* find(std::string_view name) const;  // HELD NOT OWNED by the caller
  std::vector<std::string> names() const;

 private:
  std::vector<void*> handles_;
  std::map<std::string, const task::TaskDef*, std::less<>> tasks_;
};

}  // namespace mb::worker
