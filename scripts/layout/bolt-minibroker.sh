#!/usr/bin/env bash
# Post-link step of minibroker (broker/CMakeLists.txt): BOLT moves every function
# named in the order file (the code that runs from start-up to an idle broker
# serving a connection) to the front of the text, in that order, so the kernel
# maps those pages instead of 64 KiB fault-around windows scattered over all of
# RocksDB. Usage: bolt-minibroker.sh LLVM_BOLT BINARY ORDER_FILE
set -euo pipefail
bolt=$1 bin=$2 order=$3
log=$bin.bolt.log
if ! "$bolt" "$bin" -o "$bin.bolt" --reorder-functions=user --function-order="$order" >"$log" 2>&1; then
  cat "$log" >&2
  echo "bolt-minibroker: llvm-bolt failed (log above); configure with -DMB_BOLT=OFF to skip this step" >&2
  exit 1
fi
# Copied with write(2), as an installer writes a binary, then renamed over the
# old one (no ETXTBSY while it runs). llvm-bolt writes its output through a
# memory mapping; on Linux 6.18 (ext4 with large folios, whose fault-around maps
# whole folios) that file's page cache left 2 MiB more of the binary resident at
# idle until the file was next read from disk: 13.1 against 11.1 MiB.
cp "$bin.bolt" "$bin.tmp"
mv -f "$bin.tmp" "$bin"
rm -f "$bin.bolt"
# Names the binary no longer has (renamed or removed functions) stay where the
# linker put them: say so when the order file needs regenerating.
listed=$(grep -c . "$order")
missing=$(grep -c "Reorder functions: can't find function" "$log" || true)
if [ "$missing" -gt $((listed / 10)) ]; then
  echo "bolt-minibroker: $missing of $listed functions of $order are not in the binary;" \
       "regenerate it with scripts/layout/startup-order" >&2
fi
