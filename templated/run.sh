#!/usr/bin/env bash
# A hyperparameter sweep: one TFJob per combination of templated/values.yaml's grid.
#   templated/run.sh --dry_run --output_dir /tmp/sweep   # preview the YAML, submit nothing
#   templated/run.sh --namespace alice --parallel 2      # submit the trials (kubectl create), 2 at a time
#   templated/run.sh --local -- --dataset mini           # run every trial on this machine
#   templated/run.sh --results                           # rank the trials, name the export to serve
# `templated/run.sh --help` tells everything; src/sweep.py does the work.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${VENV:-$here/../.venv}"
python="$venv/bin/python"
if [[ ! -x "$python" ]]; then
  echo "error: no virtualenv at $venv: run 'make venv' first (or set VENV to one with requirements-dev.txt)" >&2
  exit 1
fi
exec "$python" "$here/../src/sweep.py" "$@"
