#!/usr/bin/env bash
# Installs uplinkd from a built checkout (scripts/setup.sh first), as root:
#   PREFIX/lib/uplinkd                 the app: dist/, production node_modules/, package.json
#   PREFIX/bin/uplinkd                 a launcher that runs it with the Node.js found now
#   /etc/systemd/system/uplinkd.service  packaging/uplinkd.service, ExecStart at that launcher
#   /etc/uplinkd/uplinkd.yaml          packaging/uplinkd.yaml, only if there is no config yet
# It starts and enables nothing. What it added is listed in
# PREFIX/lib/uplinkd/install-manifest; --uninstall removes exactly that, and
# keeps a config changed since. README "Run it as a service" has the details.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/install.sh [--prefix DIR] [--destdir DIR] [--node PATH] [--uninstall]

  --prefix DIR   where the app and the launcher go (default /usr/local)
  --destdir DIR  a staging root every installed path is put under (default: none)
  --node PATH    the Node.js (>= 20.19) the launcher runs (default: `node` on PATH)
  --uninstall    remove what an install with the same --prefix and --destdir added
EOF
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

usage_error() {
  echo "install.sh: $*" >&2
  usage >&2
  exit 2
}

prefix=/usr/local
destdir=
node=
uninstall=0
while [ $# -gt 0 ]; do
  case $1 in
    --prefix | --destdir | --node)
      [ $# -ge 2 ] || usage_error "$1 needs a value"
      declare "${1#--}=$2"
      shift 2
      ;;
    --prefix=* | --destdir=* | --node=*)
      option=${1%%=*}
      declare "${option#--}=${1#*=}"
      shift
      ;;
    --uninstall) uninstall=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown argument: $1" ;;
  esac
done

# The prefix is written into the unit file, where spaces, % and $ mean
# something: keep it to plain path characters.
prefix=${prefix%/}
[[ $prefix =~ ^(/[A-Za-z0-9._+-]+)+$ ]] || die "--prefix must be an absolute path of letters, digits and . _ + - (got '$prefix')"
if [ -n "$destdir" ]; then
  [[ $destdir == /* ]] || destdir=$PWD/$destdir
  destdir=${destdir%/}
fi

lib=$prefix/lib/uplinkd
launcher=$prefix/bin/uplinkd
unit=/etc/systemd/system/uplinkd.service
config=/etc/uplinkd/uplinkd.yaml
manifest=$lib/install-manifest
# Where `systemctl enable` puts its link (WantedBy= in the unit).
enabled_link=/etc/systemd/system/multi-user.target.wants/uplinkd.service

# ------------------------------------------------------------ the manifest
# One line per thing added, paths as on the target (without --destdir):
#   f PATH          a file or symlink
#   d PATH          a directory that did not exist before (parents first)
#   c SHA256 PATH   the example config, with its checksum as installed
files=()
dirs=()
config_line=

read_manifest() {
  files=() dirs=() config_line=
  local line
  while IFS= read -r line; do
    case $line in
      'f '*) files+=("${line#f }") ;;
      'd '*) dirs+=("${line#d }") ;;
      'c '*) config_line=${line#c } ;;
      *) die "$destdir$manifest: unreadable line: $line" ;;
    esac
  done <"$destdir$manifest"
}

# Removes the recorded files, then the recorded directories that are empty,
# deepest first. With keep_config the example config (and so its
# directory) stays, for a reinstall over an existing one.
remove_recorded() {
  local keep_config=$1 path i present=() reversed=() left=
  for path in "${files[@]}"; do
    if [ -f "$destdir$path" ] || [ -L "$destdir$path" ]; then present+=("$destdir$path"); fi
  done
  # One rm for all: a fork per file would take seconds for node_modules.
  [ ${#present[@]} -eq 0 ] || printf '%s\0' "${present[@]}" | xargs -0 rm -f --
  if [ -n "$config_line" ] && [ "$keep_config" = 0 ]; then
    local sum=${config_line%% *} config_path=${config_line#* }
    if [ -f "$destdir$config_path" ]; then
      if [ "$(sha256sum <"$destdir$config_path" | cut -d' ' -f1)" = "$sum" ]; then
        rm -f -- "$destdir$config_path"
      else
        echo "kept $config_path: changed since install"
      fi
    fi
  fi
  rm -f -- "$destdir$manifest"
  # Deepest first, so a directory is empty once its own recorded ones are gone.
  for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do
    if [ -d "$destdir${dirs[i]}" ]; then reversed+=("$destdir${dirs[i]}"); fi
  done
  [ ${#reversed[@]} -eq 0 ] || printf '%s\0' "${reversed[@]}" | xargs -0 rmdir --ignore-fail-on-non-empty --
  [ "$keep_config" = 0 ] || return 0
  for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do
    path=${dirs[i]}
    # Only the deepest: its parents are left for the same reason.
    if [ -d "$destdir$path" ] && [[ $left != "$path"/* ]]; then
      echo "left $path: not empty"
      left=$path
    fi
  done
}

if [ "$uninstall" = 1 ]; then
  [ -f "$destdir$manifest" ] || die "nothing to uninstall: no $destdir$manifest (installed with another --prefix or --destdir?)"
  if [ -e "$destdir$enabled_link" ] || [ -L "$destdir$enabled_link" ]; then
    die "uplinkd is still enabled; first run: systemctl disable --now uplinkd"
  fi
  read_manifest
  remove_recorded 0
  echo "removed uplinkd: ${#files[@]} files under $prefix and /etc${destdir:+, in $destdir}"
  echo "then: systemctl daemon-reload"
  exit 0
fi

# ------------------------------------------------------------ install

checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$checkout/dist/cli.js" ] || [ ! -d "$checkout/node_modules" ]; then
  die "the checkout at $checkout is not built; run scripts/setup.sh first"
fi

if [ -z "$node" ]; then
  node=$(command -v node || true)
  [ -n "$node" ] || die "no Node.js on PATH; uplinkd needs Node.js >= 20.19 (install it, e.g. from nodejs.org, or pass --node PATH)"
fi
[[ $node == /* ]] || node=$(command -v -- "$node" || true)
if [[ $node != /* ]] || [ ! -f "$node" ] || [ ! -x "$node" ]; then die "--node: $node is not an executable file"; fi
if ! "$node" -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' 2>/dev/null; then
  die "uplinkd needs Node.js >= 20.19; $node is $("$node" --version 2>/dev/null || echo 'not runnable'). Install a newer one or pass --node PATH"
fi
case $node in
  /home/* | /root/* | /run/user/*)
    echo "warning: $node is under a home directory, which the unit hides (ProtectHome=yes): the service will not start. Install Node.js system-wide or pass --node PATH" >&2 ;;
esac
# npm's own script, run by that same Node.js.
npm=$(dirname "$node")/npm
[ -x "$npm" ] || npm=$(command -v npm || true)
[ -n "$npm" ] || die "npm (which comes with Node.js) is needed to leave out the development packages"
npm=$(readlink -f -- "$npm")

# A reinstall replaces the app; the example config stays, changed or not.
carried_dirs=()
if [ -f "$destdir$manifest" ]; then
  read_manifest
  remove_recorded 1
  for path in "${dirs[@]}"; do
    if [ -d "$destdir$path" ]; then carried_dirs+=("$path"); fi
  done
  if [ -n "$config_line" ] && [ ! -f "$destdir${config_line#* }" ]; then config_line=; fi
else
  for path in "$lib" "$launcher" "$unit"; do
    if [ -e "$destdir$path" ] || [ -L "$destdir$path" ]; then
      die "$destdir$path exists and was not installed by this script (no $destdir$manifest); remove it first"
    fi
  done
fi

# What is under the app directory now is not ours (files a user added there
# survive a reinstall) and is never recorded.
declare -A not_ours=() recorded_dir=()
if [ -d "$destdir$lib" ]; then
  while IFS= read -r -d '' path; do not_ours[${path#"$destdir"}]=1; done < <(find "$destdir$lib" -mindepth 1 -print0)
fi
files=()
dirs=()
for path in "${carried_dirs[@]}"; do dirs+=("$path"); recorded_dir[$path]=1; done
written=()

# Writes the manifest: the directories made (parents first), every file
# under the app that is ours, the launcher and unit once written, the config.
write_manifest() {
  local path
  files=()
  if [ -d "$destdir$lib" ]; then
    while IFS= read -r -d '' path; do
      path=${path#"$destdir"}
      if [[ $path == *$'\n'* ]]; then echo "warning: not recorded (a newline in its name): $path" >&2; continue; fi
      [ -n "${not_ours[$path]:-}" ] || files+=("$path")
    done < <(find "$destdir$lib" -mindepth 1 \( -type f -o -type l \) ! -path "$destdir$manifest*" -print0 | sort -z)
    while IFS= read -r -d '' path; do
      path=${path#"$destdir"}
      [[ $path != *$'\n'* ]] || continue
      if [ -z "${not_ours[$path]:-}" ] && [ -z "${recorded_dir[$path]:-}" ]; then dirs+=("$path"); recorded_dir[$path]=1; fi
    done < <(find "$destdir$lib" -mindepth 1 -type d -print0 | sort -z)
  fi
  files+=("${written[@]}")
  {
    for path in "${dirs[@]}"; do echo "d $path"; done
    for path in "${files[@]}"; do echo "f $path"; done
    [ -z "$config_line" ] || echo "c $config_line"
  } >"$destdir$manifest.new"
  mv -- "$destdir$manifest.new" "$destdir$manifest"
}

# Half an install is still recorded, so that --uninstall can take it away.
installing=1
on_exit() {
  local status=$?
  if [ "$installing" = 1 ] && [ -d "$destdir$lib" ]; then
    write_manifest
    echo "install.sh: stopped part-way; what it added is listed in $destdir$manifest, and --uninstall removes it" >&2
  fi
  exit "$status"
}
trap on_exit EXIT

# Creates a directory and each missing parent, recording those it made.
make_dir() {
  local path=$1 parent
  [ -d "$destdir$path" ] && return 0
  parent=$(dirname "$path")
  [ "$parent" = "$path" ] || make_dir "$parent"
  mkdir -m 0755 -- "$destdir$path"
  dirs+=("$path")
  recorded_dir[$path]=1
}

make_dir "$lib"
make_dir "$(dirname "$launcher")"
make_dir "$(dirname "$unit")"
make_dir "$(dirname "$config")"

# The app: the built dist/ and, of the checkout's node_modules, the
# packages npm counts as production ones (not tsc, tsx, esbuild). Copying a
# top-level package copies the packages nested in it too.
packages=$(cd "$checkout" && "$node" "$npm" ls --omit=dev --all --parseable 2>/dev/null) ||
  die "npm ls finds the checkout's node_modules incomplete; run scripts/setup.sh again"
cp -a "$checkout/dist" "$checkout/package.json" "$destdir$lib/"
while IFS= read -r path; do
  relative=${path#"$checkout"/}
  [[ $relative =~ ^node_modules/(@[^/]+/)?[^/]+$ ]] || continue
  mkdir -p -- "$(dirname "$destdir$lib/$relative")"
  cp -a -- "$checkout/$relative" "$destdir$lib/$relative"
done <<<"$packages"

# Single quotes for the shell, with any ' in the path closed and escaped.
quoted_node="'${node//\'/\'\\\'\'}'"
written+=("$launcher")
cat >"$destdir$launcher" <<EOF
#!/bin/sh
# uplinkd, installed by scripts/install.sh: the app beside this file
# (../lib/uplinkd), run by the Node.js found at install time.
app="\$(dirname "\$(readlink -f "\$0")")/../lib/uplinkd"
exec $quoted_node "\$app/dist/cli.js" "\$@"
EOF
chmod 0755 "$destdir$launcher"

written+=("$unit")
while IFS= read -r line || [ -n "$line" ]; do
  case $line in
    ExecStart=*) echo "ExecStart=$launcher run" ;;
    *) printf '%s\n' "$line" ;;
  esac
done <"$checkout/packaging/uplinkd.service" >"$destdir$unit"
chmod 0644 "$destdir$unit"

if [ -e "$destdir$config" ]; then
  echo "kept the existing $config"
else
  install -m 0644 "$checkout/packaging/uplinkd.yaml" "$destdir$config"
  config_line="$(sha256sum <"$destdir$config" | cut -d' ' -f1) $config"
fi

write_manifest
installing=0

echo "installed uplinkd ${destdir:+under $destdir }(Node.js $node $("$node" --version)):"
echo "  $launcher"
echo "  $lib"
echo "  $unit"
echo "  $config"
echo "Nothing was started. Edit $config, check it with \`uplinkd check\`, then:"
echo "  systemctl daemon-reload && systemctl enable --now uplinkd"
