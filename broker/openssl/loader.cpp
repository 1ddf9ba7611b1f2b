// See loader.hpp.
#include "broker/openssl/loader.hpp"

#include <dlfcn.h>
#include <openssl/opensslv.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#ifdef MB_OPENSSL_LINKED  // linked as usual (not x86-64): nothing to load

namespace mb::openssl {
bool load(std::string*) { return true; }
bool loaded() { return true; }
}  // namespace mb::openssl

#else

static_assert(OPENSSL_VERSION_MAJOR == 3, "functions.inc and the library names are OpenSSL 3's");

// The slots trampolines.S jumps through.
#define MB_OPENSSL_FUNCTION(name) extern "C" void* mb_openssl_slot_##name;
#include "broker/openssl/functions.inc"
#undef MB_OPENSSL_FUNCTION

namespace mb::openssl {
namespace {

struct Function {
  const char* name;
  void** slot;
};

constexpr Function kFunctions[] = {
#define MB_OPENSSL_FUNCTION(name) {#name, &mb_openssl_slot_##name},
#include "broker/openssl/functions.inc"
#undef MB_OPENSSL_FUNCTION
};

std::once_flag once;
std::atomic<bool> ok{false};
std::string failure;
void (*real_conf_modules_unload)(int) = nullptr;

void load_once() {
  // RTLD_GLOBAL for libcrypto: libssl finds it among its own dependencies
  // anyway; global lets a later module (the HTTPS server) share this copy.
  void* crypto = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_GLOBAL);
  void* ssl = crypto ? dlopen("libssl.so.3", RTLD_NOW | RTLD_GLOBAL) : nullptr;
  if (ssl == nullptr) {
    failure = dlerror();
    return;
  }
  // Resolve all before publishing any: a slot holds either its first-call entry
  // or the real function, and every slot is written before the first real call.
  void* resolved[std::size(kFunctions)];
  for (std::size_t i = 0; i < std::size(kFunctions); ++i) {
    resolved[i] = dlsym(ssl, kFunctions[i].name);  // libssl's dependencies include libcrypto
    if (resolved[i] == nullptr) {
      failure = std::string("OpenSSL has no ") + kFunctions[i].name;
      return;
    }
  }
  for (std::size_t i = 0; i < std::size(kFunctions); ++i)
    __atomic_store_n(kFunctions[i].slot, resolved[i], __ATOMIC_RELEASE);
  real_conf_modules_unload = reinterpret_cast<void (*)(int)>(dlsym(crypto, "CONF_modules_unload"));
  ok.store(true, std::memory_order_release);
}

}  // namespace

bool load(std::string* error) {
  std::call_once(once, load_once);
  if (!ok.load(std::memory_order_acquire) && error != nullptr) *error = "cannot load OpenSSL: " + failure;
  return ok.load(std::memory_order_acquire);
}

bool loaded() { return ok.load(std::memory_order_acquire); }

}  // namespace mb::openssl

// Called by a trampoline's first-call entry with the address of its slot, on the first call
// of any OpenSSL function: loads OpenSSL and returns the function to jump to.
extern "C" [[gnu::visibility("hidden")]] void* mb_openssl_resolve(void** slot) {
  std::string error;
  if (!mb::openssl::load(&error)) {
    std::fprintf(stderr, "minibroker: %s\n", error.c_str());
    std::abort();
  }
  return __atomic_load_n(slot, __ATOMIC_ACQUIRE);
}

// asio's OpenSSL initialiser calls this from a static destructor, whether or not
// TLS was used: forwarded only when OpenSSL is loaded. Hidden, so that in a
// process that also links libcrypto (broker_sha256_test) it replaces nothing
// but asio's call.
extern "C" [[gnu::visibility("hidden")]] void CONF_modules_unload(int all) {
  if (mb::openssl::loaded() && mb::openssl::real_conf_modules_unload != nullptr)
    mb::openssl::real_conf_modules_unload(all);
}

#endif  // MB_OPENSSL_LINKED
