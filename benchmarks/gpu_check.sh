#!/usr/bin/env bash
# GPU readiness check of the paper preset (issue 14 item 3): prints ONE JSON line (see benchmarks/gpu_check.py).
#
#   bash benchmarks/gpu_check.sh            # on a machine with one CUDA GPU; under 8 minutes on an H100
#   bash benchmarks/gpu_check.sh --dry-run  # the same steps tiny on the CPU (torchrun with gloo), same keys
#
# Without a CUDA device (and without --dry-run) it exits 1 saying that no CUDA device was found.
# Python: $PARTSIM_PYTHON, else the repository's .venv/bin/python, else python3. The whole check is killed
# after $GPU_CHECK_TIMEOUT seconds (default 480 = 8 minutes).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PARTSIM_PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python="python3"; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
cd "$root"
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$python" "$root/benchmarks/gpu_check.py" "$@"
