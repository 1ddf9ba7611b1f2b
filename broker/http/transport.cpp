// load_http_module(): loads the embedded libmb_httplib.so on first use. See
// transport.hpp.
#include "broker/http/transport.hpp"

#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

// The module's bytes, from httplib_module_blob.S.
extern "C" const char mb_httplib_module_begin[];
extern "C" const char mb_httplib_module_end[];

namespace mb::http {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("cannot load the HTTP module libmb_httplib.so: " + what);
}

// Copies the module into an anonymous file and dlopens it through /proc:
// nothing to install beside the executable, nothing left on disk.
const HttpModule* open_module() {
  const int fd = ::memfd_create("libmb_httplib.so", MFD_CLOEXEC);
  if (fd < 0) fail(std::string("memfd_create: ") + std::strerror(errno));
  for (const char* p = mb_httplib_module_begin; p < mb_httplib_module_end;) {
    const ssize_t n = ::write(fd, p, static_cast<std::size_t>(mb_httplib_module_end - p));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = errno;
      ::close(fd);
      fail(std::string("write: ") + std::strerror(e));
    }
    p += n;
  }
  void* handle = ::dlopen(("/proc/self/fd/" + std::to_string(fd)).c_str(), RTLD_NOW | RTLD_LOCAL);
  ::close(fd);  // the mapping keeps the file alive
  if (!handle) fail(::dlerror());
  auto entry = reinterpret_cast<const HttpModule* (*)()>(::dlsym(handle, "mb_http_module"));
  if (!entry) fail("no mb_http_module");
  return entry();
}

}  // namespace

const HttpModule& load_http_module() {
  static const HttpModule* module = open_module();  // never unloaded
  return *module;
}

}  // namespace mb::http
