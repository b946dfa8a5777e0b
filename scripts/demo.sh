#!/usr/bin/env bash
# The demo: set up, then open JupyterLab on 127.0.0.1 with the demo notebooks.
# The p2p-nb server extension is enabled by installation; open two notebooks
# (two kernels) and run them to see them chat. Extra arguments go to jupyter lab.
set -euo pipefail
cd "$(dirname "$0")/.."
P2P_NB_SETUP_BROWSER=${P2P_NB_SETUP_BROWSER:-0} bash scripts/setup.sh
exec .venv/bin/jupyter lab --ip=127.0.0.1 --no-browser --ServerApp.root_dir=notebooks "$@"
