#!/usr/bin/env bash
# Builds the Debian package luaio_<version>_amd64.deb (and its -dbgsym .ddeb) from the
# files of this source tree, in a scratch copy, so that neither build/ nor any other
# local state leaks into it. The last line of output is the path of the .deb.
#   bash packaging/build-deb.sh [output-dir]     (default: build-deb/)
# Needs the Build-Depends of packaging/debian/control (installed by scripts/setup.sh).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$src/build-deb}" && cd "${1:-$src/build-deb}" && pwd)

# The one version: CMake's project(VERSION); the Debian changelog must agree.
version=$(sed -n 's/^project(luaio VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
deb_version=$(sed -n '1s/^luaio (\([^)]*\)).*/\1/p' "$src/packaging/debian/changelog")
if [ -z "$version" ] || [ "$version" != "$deb_version" ]; then
    echo "build-deb.sh: CMakeLists.txt says version '$version' but packaging/debian/changelog says '$deb_version'" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tree="$work/luaio-$version"
mkdir -p "$tree"
# The files git knows of (tracked or new, not ignored), as they are in the working tree.
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$src" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' |
        tar --null -T - -cf -) | tar -C "$tree" -xf -
else
    tar -C "$src" --exclude='./build*' -cf - . | tar -C "$tree" -xf -
fi
cp -rL "$src/packaging/debian" "$tree/debian"

(cd "$tree" && DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-} parallel=2" \
    dpkg-buildpackage -b -us -uc --no-sign)

deb="luaio_${version}_amd64.deb"
mv "$work/$deb" "$out/"
mv "$work"/luaio-dbgsym_"${version}"_amd64.*deb "$out/" 2>/dev/null || true
echo "$out/$deb"
