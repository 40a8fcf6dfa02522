#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests when it is missing. Playwright cannot download its
# own browser on machines without internet, so the tests drive /usr/bin/chromium instead.
set -u
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: /usr/bin/chromium is missing and apt-get is unavailable; browser tests will be skipped." >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "note: /usr/bin/chromium is missing and we are not root; browser tests will be skipped." >&2
    exit 0
  fi
fi
echo "Installing Chromium for the browser tests (apt-get install chromium)..."
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; }; then
  echo "note: could not install chromium; browser tests will be skipped." >&2
fi
exit 0
