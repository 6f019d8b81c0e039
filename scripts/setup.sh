#!/usr/bin/env bash
# Installs what `make dev` and `make test` need beyond the Rust toolchain: a Python virtualenv
# (.venv) with the pinned emulator (moto), cargo-lambda and cfn-lint. Idempotent and quick when
# nothing changed: the virtualenv is rebuilt only when requirements-dev.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)

if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv with $(paste -sd' ' requirements-dev.txt | sed 's/#[^ ]* //g')"
  if ! "$python" -m venv .venv 2>/dev/null; then
    # Debian's python3 needs the venv module as a separate package.
    if command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
    "$python" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

for tool in moto_server cargo-lambda cfn-lint; do
  [ -x ".venv/bin/$tool" ] || { echo "setup: .venv/bin/$tool missing after install" >&2; exit 1; }
done

# Formatting and lint checks need these rustup components.
if command -v rustup >/dev/null; then
  for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
  done
fi

# The console's browser test: Debian's Chromium (headless) and playwright-core (pinned in
# console/package-lock.json, driving that Chromium; no browser download).
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian's chromium for the console's browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: /usr/bin/chromium is missing and cannot be installed here (apt-get as root)" >&2
    exit 1
  fi
fi
lock_want=$(sha256sum console/package-lock.json | cut -d' ' -f1)
if [ ! -d console/node_modules/playwright-core ] || [ "$(cat console/node_modules/.lock.sha256 2>/dev/null)" != "$lock_want" ]; then
  echo "setup: npm ci in console/ (playwright-core, uplot)"
  (cd console && npm ci --ignore-scripts --no-audit --no-fund --silent)
  echo "$lock_want" > console/node_modules/.lock.sha256
fi
