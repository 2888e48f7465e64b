#!/usr/bin/env bash
# Installs what `npm run demo` and `npm test` need on a fresh Debian/Ubuntu machine:
# npm dependencies (when missing or stale), the build (dist/, when missing or older than src/),
# redis-server (when not on PATH) and Debian's chromium for the dashboard's browser test (when
# /usr/bin/chromium is missing; the test skips with one line without it).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies" >&2
  npm ci --no-audit --no-fund >&2
fi

# The compiled JavaScript that bin/portrait-batch.js runs (scripts/build.mjs: tsc, then the Lua and
# dashboard files beside it); skipped when dist/ is newer than every source.
node scripts/build.mjs --if-stale >&2

if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing redis-server with apt-get" >&2
    SUDO=""
    if [ "$(id -u)" != "0" ]; then
      if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup: redis-server is missing and we are not root (no sudo): install it with 'apt-get install redis-server' or set REDIS_URL" >&2
        exit 1
      fi
    fi
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >&2
    # The Debian package starts a system service; the project runs its own private servers.
    $SUDO service redis-server stop >/dev/null 2>&1 || true
  else
    echo "setup: redis-server is missing and there is no apt-get: install Redis >= 6.2 or set REDIS_URL" >&2
    exit 1
  fi
fi

if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = "0" ] || command -v sudo >/dev/null 2>&1; }; then
    echo "setup: installing chromium with apt-get (for the dashboard's browser test)" >&2
    SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2 || echo "setup: chromium could not be installed; the browser test will be skipped" >&2
  else
    echo "setup: /usr/bin/chromium is missing and cannot be installed here; the browser test will be skipped" >&2
  fi
fi
