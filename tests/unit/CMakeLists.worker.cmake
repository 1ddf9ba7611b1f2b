# Unit tests of the task runtime (issue 4): one doctest executable per area,
# each registered with CTest. Included from tests/CMakeLists.txt.
set(MB_WORKER_TEST_DIR ${CMAKE_CURRENT_LIST_DIR})

function(mb_worker_test name)
  add_executable(${name} ${MB_WORKER_TEST_DIR}/${name}.cpp)
  target_link_libraries(${name} PRIVATE ${ARGN} doctest::doctest)
  add_test(NAME ${name} COMMAND ${name})
endfunction()

mb_worker_test(worker_sdk_test mb_task_sdk)
mb_worker_test(worker_envelope_test mb_client mb_task)
mb_worker_test(worker_pool_test mb_worker)
target_compile_definitions(worker_pool_test PRIVATE MB_EXAMPLE_TASKS="$<TARGET_FILE:example_tasks>")
add_dependencies(worker_pool_test example_tasks)
mb_worker_test(worker_celery_test mb_worker)
mb_worker_test(worker_prefetch_test mb_worker)
