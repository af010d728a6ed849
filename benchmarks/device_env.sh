# benchmarks/device_env.sh - the setup the device scripts share; sourced, not run:
#     source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh" NAME
# sets ROOT (the checkout), DEV (gpu | cpu, default gpu), OUT (default out/NAME, created),
# DATA (default .devdata), PY (python3 unless PYTHON is set), puts the checkout and
# DATA/pylib (packages carried to the device) on PYTHONPATH, and turns off progress bars and
# matplotlib's display. The XDG cache (decoded datasets) is kept out of $OUT. Defines
# machine_txt (below).
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

# machine_txt HEADLINE DIR: the GPU, the CPU, memory and DIR's disk, after HEADLINE, into
# $OUT/machine.txt (what each device script's results come with)
machine_txt() {
    {
        echo "$1, started $(date -u +%FT%TZ)"
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader \
            2>/dev/null
        lscpu | grep -E "Model name|^CPU\(s\)"
        free -g | head -2
        df -h "$2" | tail -1
    } >"$OUT/machine.txt" 2>&1
}
