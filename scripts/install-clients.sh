#!/usr/bin/env bash
# The HTTP clients the tests and benchmarks drive: curl (with HTTP/2), h2load / nghttp from
# nghttp2-client and wrk (the load benchmark); and libnghttp2-dev, which the compiled HTTP/2
# engine is built against. Idempotent and quiet: installs only what is missing, with apt-get
# (as root or through sudo); elsewhere it says what to install.
set -euo pipefail
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
# libnghttp2's header and library: the compiled HTTP/2 engine is built against them.
if ! pkg-config --exists libnghttp2 2>/dev/null && [ ! -f /usr/include/nghttp2/nghttp2.h ]; then
    missing+=(libnghttp2-dev pkg-config)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-clients: please install ${missing[*]} (no apt-get here)" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-clients: need root for apt-get" >&2; exit 1; }
    sudo=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
