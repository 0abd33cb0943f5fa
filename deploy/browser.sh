#!/usr/bin/env bash
# A headless browser for the dashboard's end-to-end test: Debian's Chromium, no download of
# a browser build of its own (Playwright drives this one through executable_path).
#
#   browser.sh install   install Debian's chromium when no Chromium can be found
#   browser.sh path      print the browser's executable; exit 1 when there is none
#
# Environment: LOYALTY_BROWSER (an executable to use instead; install then installs nothing).
set -euo pipefail

say() { echo "browser.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

find_browser() {
  local candidate
  for candidate in "${LOYALTY_BROWSER:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    if [[ -n $candidate && -x $candidate ]]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

cmd_install() {
  if [[ -n ${LOYALTY_BROWSER:-} ]]; then
    # A browser named on purpose is the caller's to provide: installing another would hide
    # a wrong name.
    find_browser >/dev/null || die "LOYALTY_BROWSER=$LOYALTY_BROWSER is not an executable"
    return 0
  fi
  ! find_browser >/dev/null || return 0
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "Chromium is not installed and this user cannot install it: run as root 'apt-get install -y chromium'"
    sudo=(sudo -n)
  fi
  command -v apt-get >/dev/null || die "Chromium is not installed and there is no apt-get: install Chromium and set LOYALTY_BROWSER"
  say "installing Chromium from the Debian packages..."
  "${sudo[@]}" apt-get update -qq >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium >&2
  find_browser >/dev/null || die "installed chromium, yet no /usr/bin/chromium was found"
}

cmd_path() {
  find_browser || die "no Chromium found: run 'deploy/browser.sh install' or set LOYALTY_BROWSER"
}

case ${1:-} in
  install) cmd_install ;;
  path) cmd_path ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
