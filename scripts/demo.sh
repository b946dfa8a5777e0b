#!/usr/bin/env bash
# The demo: set up, then open JupyterLab on 127.0.0.1 with the demo notebooks.
# The p2p-nb server extension is enabled by installation; open two notebooks
# (two kernels) and run them to see them chat. Extra arguments go to jupyter lab.
set -euo pipefail
cd "$(dirname "$0")/.."
P2P_NB_SETUP_BROWSER=${P2P_NB_SETUP_BROWSER:-0} bash scripts/setup.sh
cat <<'MSG'

  p2p-nb demo: JupyterLab starts below; open the http://127.0.0.1:8888/lab?token=...
  URL it prints. Then open notebooks 01-chat-ana and 02-chat-ben and run all cells
  in both (Run > Run All Cells): two kernels chat peer to peer. 03/04 share a DataFrame.

MSG
extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-root)  # containers and CI machines run as root
exec .venv/bin/jupyter lab --ip=127.0.0.1 --no-browser --ServerApp.root_dir=notebooks "${extra[@]}" "$@"
