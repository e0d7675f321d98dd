#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine with Node 20: system packages,
# npm dependencies, the native addon and the TypeScript build. Each step is skipped
# when already done, so a second run takes a second or two.
#   scripts/setup.sh          what the library and CLI need
#   scripts/setup.sh --test   plus what the tests and benchmarks need (PyTorch, SciPy, h5py,
#                             protobuf: independent writers of Keras and Caffe fixtures;
#                             Chromium: the web page tests; Open MPI: data-parallel training)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
case "${1:-}" in
  "") ;;
  --test) want_test=1 ;;
  -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  *) echo "setup: unknown argument '$1' (scripts/setup.sh --help shows the usage)" >&2; exit 2 ;;
esac

apt_pkgs=(libdnnl-dev)
[ $want_test = 1 ] && apt_pkgs+=(python3-torch python3-numpy python3-scipy python3-h5py python3-protobuf protobuf-compiler chromium libopenmpi-dev openmpi-bin)

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]} with apt-get"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif [ ! -f /usr/include/oneapi/dnnl/dnnl.hpp ] && [ ! -f /opt/homebrew/include/oneapi/dnnl/dnnl.hpp ] && [ ! -f /usr/local/include/oneapi/dnnl/dnnl.hpp ]; then
    echo "setup: oneDNN not found: install it (Debian/Ubuntu: apt-get install libdnnl-dev; elsewhere: build oneDNN 2.x and set ONEDNN_ROOT; Homebrew's onednn is 3.x)" >&2
    exit 1
  fi
fi

# npm dependencies: reinstall when the lock file changed since the last install.
export ONNXRUNTIME_NODE_INSTALL_CUDA=skip
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.package-lock.json
fi

# Native addons: rebuild when any native source is newer than the built module. The MPI
# addon (native/mpi.cc) is built only where MPI is found (scripts/find-mpi.cjs), and is
# compared with its own module: it is also due when MPI was installed after the last build.
addon=build/Release/fcn_native.node
mpi_addon=build/Release/fcn_mpi.node
stale_mpi=""
if [ "$(node scripts/find-mpi.cjs found)" = 1 ]; then
  [ -f "$mpi_addon" ] || stale_mpi=missing
  [ -n "$stale_mpi" ] || stale_mpi="$(find native/mpi.cc binding.gyp scripts/find-mpi.cjs -newer "$mpi_addon" 2>/dev/null | head -1)"
fi
if [ ! -f "$addon" ] || [ -n "$(find native binding.gyp -newer "$addon" ! -name mpi.cc 2>/dev/null | head -1)" ]; then
  echo "setup: building the native addon"
  npx --no-install node-gyp rebuild --loglevel=error >/tmp/fcn-node-gyp.log 2>&1 || { cat /tmp/fcn-node-gyp.log >&2; exit 1; }
elif [ -n "$stale_mpi" ]; then
  # Only the MPI addon: configure (it may be a new target) and build incrementally, leaving
  # the engine's module as it is.
  echo "setup: building the MPI addon"
  { npx --no-install node-gyp configure --loglevel=error && npx --no-install node-gyp build --loglevel=error; } >/tmp/fcn-node-gyp.log 2>&1 || { cat /tmp/fcn-node-gyp.log >&2; exit 1; }
  # make leaves a module whose inputs did not change as it was: mark it current.
  touch "$mpi_addon"
fi

# TypeScript: rebuild when any source is newer than the stamp.
stamp=dist/.stamp
if [ ! -f "$stamp" ] || [ -n "$(find src bin tsconfig.json -newer "$stamp" 2>/dev/null | head -1)" ]; then
  echo "setup: compiling TypeScript"
  npx --no-install tsc -p tsconfig.build.json
  touch "$stamp"
fi
