#!/usr/bin/env bash
# Provision headless Chromium (Debian's package) for the browser tests: real JupyterLab
# driven through Playwright (pip package `playwright`, a test extra; it launches this
# Chromium through executable_path, never `playwright install`, which would download one).
# Writes the executable's path to test-output/chromium.path, where tests/conftest.py
# reads it. Exits non-zero, saying why, when no Chromium can be had.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p test-output
rm -f test-output/chromium.path
for exe in /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -x "$exe" ]; then echo "$exe" > test-output/chromium.path; echo "chromium: $exe"; exit 0; fi
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "chromium: not installed, and installing it needs root and apt" >&2; exit 1
fi
echo "chromium: apt-get install chromium (about 25 s)"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
  || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null; } \
  || { echo "chromium: apt-get install failed" >&2; exit 1; }
echo /usr/bin/chromium > test-output/chromium.path
echo "chromium: /usr/bin/chromium"
