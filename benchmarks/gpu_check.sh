#!/usr/bin/env bash
# benchmarks/gpu_check.py on a machine without network (docs/gpu.md): the wheels carried in .whl/ are installed
# into /tmp/site, and medssl is imported from this checkout through PYTHONPATH, never installed. Options pass
# through: benchmarks/gpu_check.sh --out DIR --budget-s 480 (or --dry-run on a CPU). PYTHON and GPU_CHECK_SITE
# choose the interpreter (python3) and the folder the wheels go to (/tmp/site).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
site="${GPU_CHECK_SITE:-/tmp/site}"
if [ -d "$root/.whl" ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$root"/.whl/*.whl
  export PYTHONPATH="$site:$root${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
fi
cd "$root"
exec "$python" "$root/benchmarks/gpu_check.py" "$@"
