# AMQP codec unit tests (common/amqp): one doctest executable per codec unit.
# Golden frames captured from RabbitMQ, pika, py-amqp and Celery live in
# tests/data/frames/*.hex (how they were captured: tests/data/capture/).
set(MB_AMQP_TESTS amqp_bytes_test amqp_field_table_test amqp_frame_test amqp_methods_test amqp_properties_test)
foreach(test ${MB_AMQP_TESTS})
  mb_unit_test(${test} ${CMAKE_CURRENT_LIST_DIR}/${test}.cpp)
  target_link_libraries(${test} PRIVATE mb_amqp)
  target_compile_definitions(${test} PRIVATE MB_TEST_DATA_DIR="${CMAKE_CURRENT_LIST_DIR}/../data")
endforeach()
