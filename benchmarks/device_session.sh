#!/usr/bin/env bash
# benchmarks/device_session.sh - one device call for a session lent a GPU: the GPU tests,
# then issue 15's cifar-random-conv curve to 32,000 filters, then the other device checks
# with whatever time is left, all within TOTAL seconds (default 560).
#
# The device tool returns at most 8 files, no more than two folders below $OUT, so each part
# runs in a scratch folder and is packed into one archive under $OUT as soon as it ends:
#     $OUT/machine.txt         the GPU, cores, memory, disk
#     $OUT/check_first.tgz     device_check.sh's gpu_tests step (JSON, log, JUnit XML)
#     $OUT/random_conv.tgz     device_random_conv.sh's machine.txt, reproduce.log, reproduce/
#     $OUT/check_rest.tgz      the other device_check.sh steps that fit the time left
#     $OUT/session.log         what each part printed
# Unpack: tar xzf random_conv.tgz, and copy its reproduce/ over benchmarks/results/reproduce/.
#
# STAGE THE DATA first (the headers of device_check.sh and device_random_conv.sh): MNIST and
# the CIFAR-10 tarball under .devdata/, then
#     run(command="bash benchmarks/device_session.sh", carry=[".devdata"], timeout_s=595)
# DRY RUN on a CPU (tiny sizes, --quick; tests/test_device_check.py):
#     DEV=cpu OUT=/tmp/ds DATA=/work/shared/data bash benchmarks/device_session.sh
# Environment: DEV, OUT, DATA as for the two scripts; TOTAL (seconds for everything),
# FIRST (seconds for the GPU tests, default 80), RC_LIMIT (seconds for the random-conv
# curve, default 400), REST (the other device_check.sh steps, most important first; empty:
# none).
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh" device_session
TOTAL="${TOTAL:-560}"
FIRST="${FIRST:-80}"
RC_LIMIT="${RC_LIMIT:-400}"
REST="${REST-agreement mnist60k randconv n100k dense_vs_tiles gabor70k bench_cli}"
START=$(date +%s)
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/kernelfit-device-session.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT
LOG="$OUT/session.log"
: >"$LOG"
machine_txt "device_session: DEV=$DEV TOTAL=$TOTAL s" "$SCRATCH"

left() { echo $(( TOTAL - ($(date +%s) - START) )); }
pack() {  # name: $SCRATCH/name -> $OUT/name.tgz
    tar czf "$OUT/$1.tgz" -C "$SCRATCH" "$1" && echo "packed $1.tgz" >>"$LOG"
}

# 1. the GPU tests (every GPU code path against the CPU, on the real CuPy)
OUT="$SCRATCH/check_first" STEPS="gpu_tests" BUDGET="$FIRST" \
    bash "$ROOT/benchmarks/device_check.sh" >>"$LOG" 2>&1
pack check_first

# 2. issue 15: cifar-random-conv to 32,000 filters (each point is stored when solved)
limit=$RC_LIMIT
if [ "$(left)" -lt $(( limit + 20 )) ]; then limit=$(( $(left) - 20 )); fi
if [ "$limit" -ge 30 ]; then
    OUT="$SCRATCH/random_conv" LIMIT="$limit" \
        bash "$ROOT/benchmarks/device_random_conv.sh" >>"$LOG" 2>&1
    echo "device_random_conv.sh exit code $?" >>"$LOG"
    pack random_conv
else
    echo "random_conv: skipped, $(left) s left" >>"$LOG"
fi

# 3. the other checks, most important first, in the time left
budget=$(( $(left) - 10 ))
if [ -n "$REST" ] && [ "$budget" -ge 10 ]; then
    OUT="$SCRATCH/check_rest" STEPS="$REST" BUDGET="$budget" \
        bash "$ROOT/benchmarks/device_check.sh" >>"$LOG" 2>&1
    pack check_rest
fi
echo "device_session: done after $(( $(date +%s) - START )) s" >>"$LOG"
tail -n 40 "$LOG"
