#!/usr/bin/env bash
# Build (or reuse) the Debian sid root that runs the sandbox Asterisk 22.
#
# Why a chroot: these machines have no Docker engine, and Debian bookworm has no
# asterisk package; sid has Asterisk 22. The same package recipe is used by
# docker/asterisk.Dockerfile, so sandbox and production run the same Asterisk.
#
# The root is cached outside the repository (default ~/.cache/hotline/asterisk-root)
# and rebuilt when missing, when the recipe below changes, or when older than
# HOTLINE_SANDBOX_MAX_AGE_DAYS (default 14). It is built in a temp dir and renamed
# into place, so an interrupted build never leaves a half root behind.
#
# Usage: build-root.sh [--print-path] [--force]
set -euo pipefail

CACHE_DIR="${HOTLINE_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hotline}"
ROOT="${HOTLINE_SANDBOX_ROOT:-$CACHE_DIR/asterisk-root}"
MIRROR="${HOTLINE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
MAX_AGE_DAYS="${HOTLINE_SANDBOX_MAX_AGE_DAYS:-14}"
PACKAGES="asterisk,asterisk-core-sounds-en-wav,sip-tester"
# Bump RECIPE_VERSION when the steps below change in a way that needs a new root.
RECIPE_VERSION=1
RECIPE="v${RECIPE_VERSION} sid ${PACKAGES}"

force=0
for arg in "$@"; do
  case "$arg" in
    --print-path) echo "$ROOT"; exit 0 ;;
    --force) force=1 ;;
    *) echo "usage: $0 [--print-path] [--force]" >&2; exit 2 ;;
  esac
done

stamp="$ROOT/.hotline-recipe"
if [ "$force" = 0 ] && [ -x "$ROOT/usr/sbin/asterisk" ] && [ -f "$stamp" ] \
   && [ "$(cat "$stamp")" = "$RECIPE" ] \
   && [ -z "$(find "$stamp" -mtime +"$MAX_AGE_DAYS" 2>/dev/null)" ]; then
  echo "sandbox root up to date: $ROOT"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "building the sandbox root needs root (debootstrap, chroot)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "debootstrap missing: apt-get install -y debootstrap" >&2
  exit 1
fi

mkdir -p "$CACHE_DIR"
tmp="$(mktemp -d "$CACHE_DIR/root-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "building sandbox root in $tmp (Debian sid: $PACKAGES) ..."
debootstrap --variant=minbase --include="$PACKAGES" sid "$tmp" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 || {
  echo "debootstrap failed; last lines of $CACHE_DIR/debootstrap.log:" >&2
  tail -n 30 "$CACHE_DIR/debootstrap.log" >&2
  exit 1
}
# Keep the package's sample configs aside: the service writes its own config.
if [ -d "$tmp/etc/asterisk" ]; then
  mv "$tmp/etc/asterisk" "$tmp/etc/asterisk.dist"
  mkdir -p "$tmp/etc/asterisk"
fi
# apt caches are not needed at run time.
rm -rf "$tmp/var/cache/apt/archives/"*.deb
echo "$RECIPE" >"$tmp/.hotline-recipe"

old="$ROOT.old.$$"
[ -e "$ROOT" ] && mv "$ROOT" "$old"
mv "$tmp" "$ROOT"
trap - EXIT
[ -e "$old" ] && rm -rf "$old"
echo "sandbox root ready: $ROOT ($(/usr/sbin/chroot "$ROOT" /usr/sbin/asterisk -V 2>/dev/null || echo '?'))"
