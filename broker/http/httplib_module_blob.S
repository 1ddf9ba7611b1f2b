// libmb_httplib.so's bytes inside the executable, for load_http_module()
// (transport.cpp). The build passes the module's path as MB_HTTPLIB_MODULE and
// reassembles this file, so relinks minibroker, whenever the module changes.
  .section .rodata.mb_httplib_module, "a"
  .balign 16
  .globl mb_httplib_module_begin
  .hidden mb_httplib_module_begin
mb_httplib_module_begin:
  .incbin MB_HTTPLIB_MODULE
  .globl mb_httplib_module_end
  .hidden mb_httplib_module_end
mb_httplib_module_end:

  .section .note.GNU-stack, "", @progbits
