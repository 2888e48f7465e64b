#!/usr/bin/env bash
# Installs what `npm run demo` and `npm test` need on a fresh Debian/Ubuntu machine:
# npm dependencies (when missing or stale) and redis-server (when not on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies" >&2
  npm ci --no-audit --no-fund >&2
fi

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
