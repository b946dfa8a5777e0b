#!/usr/bin/env bash
# The whole test suite: set-up, lint, types, then pytest inside a network
# namespace that has only loopback (127.0.0.1, ::1 and 127.0.0.2, because
# aioice never offers 127.0.0.1 as a candidate). Nothing can leave the machine.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== ruff"
.venv/bin/ruff check p2p_nb tests bench
.venv/bin/ruff format --check p2p_nb tests bench
echo "== mypy --strict"
.venv/bin/mypy --strict p2p_nb

echo "== pytest"
run_pytest=(.venv/bin/python -m pytest "$@")
set +e
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
    echo "(in a loopback-only network namespace)"
    unshare -n sh -c 'ip link set lo up && ip addr add 127.0.0.2/8 dev lo && exec "$@"' sh "${run_pytest[@]}"
else
    echo "(cannot create a network namespace here (needs root): running on the host's network)"
    "${run_pytest[@]}"
fi
rc=$?
set -e
if [ $rc = 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit $rc
