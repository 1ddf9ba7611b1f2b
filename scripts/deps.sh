# Sourced by scripts/run, scripts/test and scripts/bench: installs the Debian
# packages the project needs, only those missing (apt-get update first, once).
MB_DEB_PACKAGES=(
  build-essential cmake ninja-build pkg-config clang
  capnproto libcapnp-dev librocksdb-dev libasio-dev libfmt-dev libspdlog-dev libcli11-dev
  nlohmann-json3-dev doctest-dev libssl-dev librabbitmq-dev libclang-rt-14-dev libcpp-httplib-dev
  python3-celery python3-kombu python3-amqp python3-pika python3-pytest python3-matplotlib
  amqp-tools rabbitmq-server procps iproute2 bolt-16
  chromium nodejs
)
# The dashboard test drives chromium with playwright-core from npm. NodeSource's
# nodejs bundles npm; Debian's does not (and its npm package conflicts with NodeSource's).
command -v npm >/dev/null 2>&1 || MB_DEB_PACKAGES+=(npm)

mb_install_deps() {
  local missing=()
  for p in "${MB_DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then return 0; fi
  echo "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Configures (once) and builds the tree in build/ (Release).
mb_build() {
  local dir=${1:-build}
  shift || true
  if [ ! -f "$dir/build.ninja" ]; then
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
  fi
  cmake --build "$dir" -j "$(nproc)"
}
