// OpenSSL, loaded when AMQPS is first used rather than at start-up.
//
// The broker reaches OpenSSL only through asio::ssl, for AMQPS. Linking libssl
// and libcrypto maps 1.7 MiB of them into every broker (their symbol tables
// and relocations are read at start-up), most of which never serve TLS. So the
// executable does not link them: trampolines.S defines the functions asio calls
// (functions.inc), each a jump through a slot that starts out pointing at a
// first-call entry that loads libssl.so.3 and libcrypto.so.3 and fills every
// slot (lazy binding, as a PLT does).
#pragma once

#include <string>

namespace mb::openssl {

// Loads OpenSSL now and resolves every function of functions.inc; true when it
// did (or had). Otherwise false, with what failed in *error. Call it before the
// first TLS use to report a missing or incompatible library as an error: a
// trampoline reached with OpenSSL unloadable aborts the process.
bool load(std::string* error);

// Whether OpenSSL is loaded (tests and diagnostics).
bool loaded();

}  // namespace mb::openssl
