#!/usr/bin/env bash
# Installs what uplinkd, its lab and its tests need on a fresh Debian machine
# (run as root from the checkout), then builds it. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Node.js >= 20.19 must already be there: Debian 12's own nodejs is 18.
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' 2>/dev/null; then
  echo "uplinkd needs Node.js >= 20.19 (found: $(node --version 2>/dev/null || echo none)); install it first, e.g. from nodejs.org" >&2
  exit 1
fi

packages=(nftables iproute2 conntrack fping iperf3 curl)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
