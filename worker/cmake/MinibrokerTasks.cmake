# MinibrokerTasks.cmake: add_task_library(NAME SOURCES...) builds a task
# library that `miniworker --tasks lib<NAME>.so` loads. It sets the include
# path for <minibroker/task.hpp>, C++20, and hidden visibility so each library
# keeps its own task registry (only mb_task_library_v1 is exported).
function(add_task_library name)
  add_library(${name} SHARED ${ARGN})
  target_link_libraries(${name} PRIVATE mb_task_sdk)
  set_target_properties(${name} PROPERTIES
    CXX_STANDARD 20
    CXX_STANDARD_REQUIRED ON
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    POSITION_INDEPENDENT_CODE ON)
endfunction()
