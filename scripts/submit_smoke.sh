#!/usr/bin/env bash
# Start a local Ray head, `ray job submit` the smoke job to it, check it succeeded, stop the head.
set -euo pipefail
cd "$(dirname "$0")/.."
source .venv/bin/activate
port=${RAY_SMOKE_DASHBOARD_PORT:-8266}
ray start --head --node-ip-address 127.0.0.1 --num-cpus 2 --port 6390 --dashboard-host 127.0.0.1 --dashboard-port "$port" --disable-usage-stats >/dev/null
trap 'ray stop --force >/dev/null 2>&1 || true' EXIT
# Ray 2.60 enables token authentication: the client reads the token the head wrote (~/.ray/auth_token).
export RAY_AUTH_MODE=token
ray job submit --address "http://127.0.0.1:$port" --working-dir . -- bash scripts/job_smoke.sh
echo "ray job submit: succeeded"
