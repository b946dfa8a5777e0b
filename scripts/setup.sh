#!/usr/bin/env bash
# Set up everything p2p-nb needs on a fresh Debian machine with Python 3.11:
# system packages (only those missing), a venv in .venv, the project with its
# test extras. Safe to run again: it only does what is not done yet.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(iproute2 util-linux nftables coturn)
[ "${P2P_NB_SETUP_BROWSER:-1}" = 1 ] && APT_PACKAGES+=(chromium)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: missing Debian packages ${missing[*]} (need root + apt-get); continuing without" >&2
    fi
fi

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $PY"
    "$PY" -m venv .venv
fi
stamp=.venv/.p2p-nb-installed
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing p2p-nb and its test dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test,bench]'
    echo "$want" > "$stamp"
fi
# The README's quick starts are tested as written, in fresh venvs, inside a
# network namespace that reaches nothing (tests/test_readme_quickstart.py):
# keep what they install at hand, fetched here while the network is there.
wheelhouse=.venv/wheelhouse
if [ ! -f "$wheelhouse/.stamp" ] || [ "$(cat "$wheelhouse/.stamp")" != "$want" ]; then
    echo "setup: downloading the quick starts' packages into $wheelhouse"
    .venv/bin/python -m pip download -q -d "$wheelhouse" '.[notebook]' hatchling
    echo "$want" > "$wheelhouse/.stamp"
fi
# JupyterLab's news popup covers the page in browser tests and demos.
settings=.venv/share/jupyter/lab/settings
mkdir -p "$settings"
[ -f "$settings/overrides.json" ] || cat > "$settings/overrides.json" <<'JSON'
{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}
JSON
