#!/usr/bin/env bash
# Installs what qstream needs on Debian/Ubuntu (skips packages already present).
# Uses sudo when not root. The CUDA toolkit is optional: when nvcc is found the CUDA backend is
# built too.
set -euo pipefail
pkgs=(build-essential cmake pkg-config liburing-dev libzstd-dev libxxhash-dev libopenblas-dev
      libjansson-dev libpcre2-dev libutf8proc-dev python3 python3-pip unzip)
[ "${QS_DEPS_CLANG:-0}" = 1 ] && pkgs+=(clang libclang-rt-dev libomp-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "qstream: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
