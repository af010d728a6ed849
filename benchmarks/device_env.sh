# benchmarks/device_env.sh - the setup both device scripts share; sourced, not run:
#     source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh" NAME
# sets ROOT (the checkout), DEV (gpu | cpu, default gpu), OUT (default out/NAME, created),
# DATA (default .devdata), PY (python3 unless PYTHON is set), puts the checkout and
# DATA/pylib (packages carried to the device) on PYTHONPATH, and turns off progress bars and
# matplotlib's display. The XDG cache (decoded datasets) is kept out of $OUT.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="${DEV:-gpu}"
OUT="${OUT:-$ROOT/out/$1}"
DATA="${DATA:-$ROOT/.devdata}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${DATA:+:$DATA/pylib}${PYTHONPATH:+:$PYTHONPATH}"
export KERNELFIT_PROGRESS=0 MPLBACKEND=Agg
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-${TMPDIR:-/tmp}/kernelfit-$1-cache}"
