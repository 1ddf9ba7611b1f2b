# store_test: the Store suite, each case run over MemoryStore and RocksDbStore
# (reopen and a SIGKILLed child process included). Included from tests/CMakeLists.txt.
add_executable(store_test ${CMAKE_CURRENT_LIST_DIR}/store_test.cpp)
target_link_libraries(store_test PRIVATE mb_store doctest::doctest)
add_test(NAME store_test COMMAND store_test)
set_tests_properties(store_test PROPERTIES TIMEOUT 300)
