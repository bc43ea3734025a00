#!/usr/bin/env bash
# benchmarks/gpu_check.py on a machine without network (docs/gpu.md): the wheels carried in .whl/ are installed
# into /tmp/site, and medssl is imported from this checkout through PYTHONPATH, never installed. Options pass
# through: benchmarks/gpu_check.sh --out DIR --budget-s 480 (or --dry-run on a CPU).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [ -d "$root/.whl" ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$root"/.whl/*.whl
  export PYTHONPATH="/tmp/site:$root${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
fi
cd "$root"
exec "$python" "$root/benchmarks/gpu_check.py" "$@"
