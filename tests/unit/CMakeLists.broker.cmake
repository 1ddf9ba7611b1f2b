# Broker core unit tests (broker/: exchange, queue, vhost, channel), one doctest
# executable per unit, sharing the fakes in support/ (FakeEnv, FakeHost, ...).
# Included from tests/CMakeLists.txt.
if(TARGET mb_broker)
  add_library(mb_broker_test_support STATIC ${CMAKE_CURRENT_LIST_DIR}/support/broker_fakes.cpp)
  target_include_directories(mb_broker_test_support PUBLIC ${CMAKE_CURRENT_LIST_DIR})
  target_link_libraries(mb_broker_test_support PUBLIC mb_broker)

  set(MB_BROKER_TESTS broker_routing_test broker_queue_test broker_vhost_test broker_channel_test broker_access_test broker_paging_test broker_sha256_test
      broker_openssl_test)
  foreach(test ${MB_BROKER_TESTS})
    mb_unit_test(${test} ${CMAKE_CURRENT_LIST_DIR}/${test}.cpp)
    target_link_libraries(${test} PRIVATE mb_broker mb_broker_test_support)
  endforeach()
  # broker_sha256_test checks ours against OpenSSL's SHA-256, linked as usual
  # (the broker reaches OpenSSL through broker/openssl/ only).
  target_link_libraries(broker_sha256_test PRIVATE OpenSSL::Crypto)
endif()
