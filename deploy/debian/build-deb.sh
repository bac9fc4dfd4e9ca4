#!/usr/bin/env bash
# Build the Debian package of Rempart, rempart_VERSION_ARCH.deb, with dpkg-deb from a staged tree
# (what `make deb` runs).
#
#   deploy/debian/build-deb.sh [--profile NAME] [--binary PATH] [--out DIR] [--compression TYPE]
#
#   --profile NAME       the cargo profile the binary is built with (default: dist, the profile of
#                        what ships: fat LTO, slow to build; `release` or `dev` for a quick package)
#   --binary PATH        package this rempart binary instead of building one (the tests use theirs)
#   --out DIR            where the package goes (default: target/debian)
#   --compression TYPE   dpkg-deb's -Z (xz, zstd, gzip, none; default: dpkg-deb's own, xz)
#
# Without --binary it builds the binary: `cargo build --profile NAME -p rempart`, in
# $CARGO_TARGET_DIR when set, else target/. VERSION is the [package] version of Cargo.toml,
# ARCH the machine's Debian architecture. The sources of the package are beside this script: the
# unit, the maintainer scripts, the control template, the configuration installed in
# /etc/rempart. The last line printed is the package's path.
set -euo pipefail
umask 022

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary=""
profile=dist
out="$root/target/debian"
compression=""

while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs a name}; shift 2 ;;
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --compression) compression=${2:?--compression needs a type}; shift 2 ;;
    *) echo "build-deb: unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
  esac
done

for tool in dpkg-deb dpkg; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build-deb: $tool is missing: run make deps" >&2
    exit 1
  fi
done

version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -n 1)
if [ -z "$version" ]; then
  echo "build-deb: no version in the [package] section of $root/Cargo.toml" >&2
  exit 1
fi
arch=$(dpkg --print-architecture)

if [ -z "$binary" ]; then
  cargo=${CARGO:-cargo}
  echo "build-deb: $cargo build --profile $profile -p rempart" >&2
  (cd "$root" && "$cargo" build --profile "$profile" -p rempart)
  # cargo puts the dev profile in debug/, every other one in a directory of its name.
  case "$profile" in dev) dir=debug ;; *) dir=$profile ;; esac
  target_dir=${CARGO_TARGET_DIR:-$root/target}
  case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
  binary="$target_dir/$dir/rempart"
fi
if [ ! -x "$binary" ]; then
  echo "build-deb: $binary is not an executable file" >&2
  exit 1
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d "$out/stage.XXXXXX")
chmod 0755 "$stage"
scratch=$(mktemp -d "$out/shlibs.XXXXXX")
trap 'rm -rf "$stage" "$scratch"' EXIT

# The files, with the modes they are installed with (owner root: --root-owner-group).
install -D -m 0755 "$binary" "$stage/usr/bin/rempart"
if command -v strip >/dev/null 2>&1; then
  # Debug sections out; the symbol table stays, so a backtrace still names functions.
  strip --strip-debug "$stage/usr/bin/rempart"
fi
install -D -m 0755 "$here/rempart-upgrade" "$stage/usr/sbin/rempart-upgrade"
install -D -m 0644 "$here/rempart.service" "$stage/lib/systemd/system/rempart.service"
install -D -m 0644 "$here/rempart.yaml" "$stage/etc/rempart/rempart.yaml"
install -D -m 0644 "$here/logrotate" "$stage/etc/logrotate.d/rempart"
install -D -m 0644 "$here/default" "$stage/usr/share/rempart/default"
install -D -m 0644 "$here/copyright" "$stage/usr/share/doc/rempart/copyright"
for doc in README.md docs/operations.md docs/configuration.md docs/contract.md; do
  install -D -m 0644 "$root/$doc" "$stage/usr/share/doc/rempart/$(basename "$doc")"
done
# What a monitoring stack needs (operations.md, § 8), to copy to the Prometheus and Grafana hosts.
install -D -m 0644 "$root/deploy/prometheus/rempart-rules.yml" "$stage/usr/share/rempart/prometheus/rempart-rules.yml"
install -D -m 0644 "$root/deploy/prometheus/rempart-rules.test.yml" "$stage/usr/share/rempart/prometheus/rempart-rules.test.yml"
install -D -m 0644 "$root/deploy/grafana/rempart.json" "$stage/usr/share/rempart/grafana/rempart.json"
# The built-in pages are in the binary; these are starting points for an operator's own.
for page in waiting-room.html maintenance.html; do
  install -D -m 0644 "$root/conf/pages/$page" "$stage/usr/share/doc/rempart/examples/pages/$page"
done

install -d -m 0755 "$stage/DEBIAN"
for script in postinst prerm postrm; do
  install -m 0755 "$here/$script" "$stage/DEBIAN/$script"
done
install -m 0644 "$here/conffiles" "$stage/DEBIAN/conffiles"

# Shared libraries the binary needs (glibc, libgcc), from dpkg-shlibdeps when it is installed.
depends="libc6"
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
  mkdir -p "$scratch/debian"
  printf 'Source: rempart\n\nPackage: rempart\nArchitecture: any\n' >"$scratch/debian/control"
  if shlibs=$(cd "$scratch" && dpkg-shlibdeps -O -e"$stage/usr/bin/rempart" 2>/dev/null); then
    shlibs=${shlibs#shlibs:Depends=}
    if [ -n "$shlibs" ]; then depends=$shlibs; fi
  else
    echo "build-deb: dpkg-shlibdeps failed; depending on libc6 alone" >&2
  fi
fi
depends="$depends, adduser"

installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
maintainer=${DEB_MAINTAINER:-"Rempart maintainers <rempart@example.invalid>"}
sed -e "s|@VERSION@|$version|" \
    -e "s|@ARCH@|$arch|" \
    -e "s|@MAINTAINER@|$maintainer|" \
    -e "s|@INSTALLED_SIZE@|$installed_size|" \
    -e "s|@DEPENDS@|$depends|" \
    "$here/control.in" >"$stage/DEBIAN/control"
(cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) \
  >"$stage/DEBIAN/md5sums"

deb="$out/rempart_${version}_${arch}.deb"
dpkg-deb --root-owner-group ${compression:+-Z"$compression"} --build "$stage" "$deb" >/dev/null
echo "build-deb: built $deb"
echo "$deb"
