# Management API snapshot and command functions (broker/http/snapshot.*), tested
# on an in-process Vhost and Channel, with no HTTP. Included from tests/CMakeLists.txt.
if(TARGET mb_mgmt AND TARGET mb_broker_test_support)
  mb_unit_test(mgmt_snapshot_test ${CMAKE_CURRENT_LIST_DIR}/mgmt_snapshot_test.cpp)
  target_link_libraries(mgmt_snapshot_test PRIVATE mb_mgmt mb_broker_test_support)
endif()
