#!/usr/bin/env bash
# benchmarks/device_random_conv.sh - issue 15's cifar-random-conv curve continued to 32,000
# filters on a lent GPU, in one device call of at most LIMIT seconds (default 540).
#
# What it runs: `kernelfit reproduce --only cifar-random-conv --device gpu` on a copy of the
# committed benchmarks/results/reproduce, so the stored points (256 to 8,000 filters, made
# with the same feature parameters) are kept and only 16,000 and 32,000 are computed. The
# random-conv features and their Gram sums (about 2.1e15 flop of FP32 products at 32,000
# filters, TF32 off) run on the GPU; each point's exact solve (float32 Cholesky, float64
# refinement and residual) runs on the device machine's host, as on any CPU. Expected on the
# H200, from operation counts: data 30 s, Gram pass 2-3 min, each solve about 2 min, two
# resume points of 12 GB written to local disk: about 7 min. Measured there (2026-12-04,
# through device_session.sh): 368 s. Each point is stored as soon as it is solved, so a run
# cut by the limit still returns the 16,000 point. The device tool returns at most 8 files
# from its $OUT: device_session.sh packs this script's output into one archive.
#
# STAGE THE DATA (on the session machine, from the checkout root; .devdata/ is git-ignored):
#     mkdir -p .devdata/cifar10-jpeg
#     cp /work/shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz .devdata/cifar10-jpeg/  # 19.4 MB
# then
#     run(command="bash benchmarks/device_random_conv.sh", carry=[".devdata"], timeout_s=590)
# and copy what comes back ($OUT/reproduce: parts, results, figures, report) over
# benchmarks/results/reproduce/ (the work/ folder of resume points never comes back).
#
# DRY RUN on a CPU (the same command with --quick, into an empty folder, seconds;
# tests/test_device_check.py):
#     DEV=cpu OUT=/tmp/drc DATA=/work/shared/data bash benchmarks/device_random_conv.sh
# Environment: DEV (gpu | cpu), OUT (default out/device_random_conv), DATA (default
# .devdata), LIMIT (seconds for the reproduce command).
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh" device_random_conv
LIMIT="${LIMIT:-540}"
RUN="$(mktemp -d "${TMPDIR:-/tmp}/kernelfit-device-rc.XXXXXX")"  # resume points: not under $OUT
trap 'rm -rf "$RUN"' EXIT
ARGS=(--device gpu)
# the dry run (--quick) starts from an empty folder: a reproduce folder holds one size of
# run, and the committed results are full-scale
if [ "$DEV" = "cpu" ]; then ARGS=(--device cpu --quick)
else cp -r "$ROOT/benchmarks/results/reproduce/." "$RUN/"; fi
machine_txt "device_random_conv: DEV=$DEV LIMIT=$LIMIT s" "$RUN"
t0=$(date +%s)
timeout --kill-after=10 "$LIMIT" "$PY" -m kernelfit reproduce --data-dir "$DATA" --out "$RUN" \
    --only cifar-random-conv --no-progress "${ARGS[@]}" >"$OUT/reproduce.log" 2>&1
rc=$?
echo "reproduce exit code $rc after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/reproduce.log"
mkdir -p "$OUT/reproduce"
for d in parts results figures; do
    if [ -d "$RUN/$d" ]; then cp -r "$RUN/$d" "$OUT/reproduce/"; fi
done
cp "$RUN"/report.* "$OUT/reproduce/" 2>/dev/null
tail -n 5 "$OUT/reproduce.log"
exit "$rc"
