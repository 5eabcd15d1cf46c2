#!/usr/bin/env bash
# Installs what the browser tests of the web UI need: Debian's Chromium and the two npm
# packages (playwright-core, which drives a browser but downloads none, and axe-core), pinned
# by package-lock.json. kubetrail itself needs neither Node nor npm.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y --no-install-recommends chromium fonts-liberation >/dev/null ||
    { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends chromium fonts-liberation >/dev/null; }
fi
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
