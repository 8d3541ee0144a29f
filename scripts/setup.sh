#!/usr/bin/env bash
# Installs what uplinkd, its lab and its tests need on a fresh Debian machine
# (run as root from the checkout), then builds it. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(nftables iproute2 conntrack fping iperf3 curl)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
