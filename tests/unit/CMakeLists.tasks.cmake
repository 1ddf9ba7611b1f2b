# tasks_tracker_test: the task tracker (broker/tasks/tracker/) without HTTP or
# sockets, over MemoryStore. Included from tests/CMakeLists.txt.
if(TARGET mb_tasks)
  mb_unit_test(tasks_tracker_test ${CMAKE_CURRENT_LIST_DIR}/tasks_tracker_test.cpp)
  target_link_libraries(tasks_tracker_test PRIVATE mb_tasks mb_store)
endif()
