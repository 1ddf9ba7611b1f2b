// load_http_module(): dlopens libmb_httplib.so on first use. See transport.hpp.
#include "broker/http/transport.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <stdexcept>

namespace mb::http {
namespace {

constexpr const char* kModuleName = "libmb_httplib.so";

// The directory of the running executable ("" when unknown), where the build
// puts the module.
std::string executable_dir() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  const std::string exe(buf, static_cast<std::size_t>(n));
  const std::size_t slash = exe.rfind('/');
  return slash == std::string::npos ? std::string() : exe.substr(0, slash);
}

const HttpModule* open_module() {
  std::string error;
  void* handle = nullptr;
  if (const std::string dir = executable_dir(); !dir.empty()) {
    handle = ::dlopen((dir + "/" + kModuleName).c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) error = ::dlerror();
  }
  if (!handle) handle = ::dlopen(kModuleName, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* e = ::dlerror();
    throw std::runtime_error(std::string("cannot load the HTTP module ") + kModuleName + ": " +
                             (error.empty() ? std::string(e ? e : "not found") : error));
  }
  auto entry = reinterpret_cast<const HttpModule* (*)()>(::dlsym(handle, "mb_http_module"));
  if (!entry) throw std::runtime_error(std::string(kModuleName) + " has no mb_http_module");
  return entry();
}

}  // namespace

const HttpModule& load_http_module() {
  static const HttpModule* module = open_module();  // never unloaded
  return *module;
}

}  // namespace mb::http
