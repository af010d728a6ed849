#!/usr/bin/env bash
# benchmarks/device_check.sh - the one prepared run for a session that is lent a GPU (issue 16).
#
# At most 6 minutes of device time (BUDGET=340 s of steps plus start-up); every step has its
# own timeout and writes $OUT/<step>.json as soon as it ends, so one slow step loses nothing
# else. Steps (benchmarks/device_steps.py): gpu_tests, agreement (CPU vs GPU, n = 5,000),
# mnist60k (bench_gpu.py: Gaussian + normalized quartic, float64, end to end), n100k
# (n = 100,000 float64 in GPU memory), dense_vs_tiles (n = 40,000: dense single call vs
# tiles, fused finish on/off, devInfo once), gabor70k (all 70,000 MNIST images), randconv
# (32,000 filters on 3,000 CIFAR-10 images, 60,000 extrapolated), bench_cli (kernelfit bench
# with its GPU columns). The device image has no Dask and no network: nothing here needs them.
#
# STAGE THE DATA (on the session machine, before the run call; the device cannot download and
# does not get ../shared). From the checkout root:
#     mkdir -p .devdata/cifar10-jpeg
#     cp -r /work/shared/data/mnist .devdata/                                    # 11.4 MB
#     cp /work/shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz .devdata/cifar10-jpeg/  # 19.4 MB
# (the H200's image has pytest and hypothesis; a package it lacks goes to .devdata/pylib,
# which device_env.sh puts on PYTHONPATH). .devdata/ is git-ignored (about 30 MB; with the
# 7 MB checkout under the 64 MiB carry limit), so name it in carry:
#     run(command="bash benchmarks/device_check.sh", carry=[".devdata"], timeout_s=420)
# Results land in $OUT; copy them to benchmarks/results/. The device tool returns at most 8
# files from its $OUT: run this with OUT set to a scratch folder and pack that, or use
# benchmarks/device_session.sh, which does so.
# A step whose data is missing writes {"status": "skipped", "reason": ...}.
#
# DRY RUN on a CPU (tiny sizes, seconds; tests/test_device_check.py runs it in CI):
#     DEV=cpu OUT=/tmp/dc DATA=/work/shared/data bash benchmarks/device_check.sh
# Environment: DEV (gpu | cpu), OUT (default out/device_check), DATA (default .devdata),
# BUDGET (seconds for all steps), STEPS (space-separated subset, default all).
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh" device_check
BUDGET="${BUDGET:-340}"
STEPS="${STEPS:-gpu_tests agreement mnist60k n100k dense_vs_tiles gabor70k randconv bench_cli}"
TINY=()
if [ "$DEV" = "cpu" ]; then TINY=(--tiny); fi

# per-step timeouts in seconds (upper limits; expected on the H200, from operation counts
# and a cold CuPy kernel cache: gpu_tests 60, agreement 10, mnist60k 35, n100k 25,
# dense_vs_tiles 15, gabor70k 10, randconv 20, bench_cli 60: about 235 s in all). The
# BUDGET clamps each limit to the time left, in the order of STEPS (most important first).
declare -A LIMIT=([gpu_tests]=90 [agreement]=40 [mnist60k]=90 [n100k]=80
                  [dense_vs_tiles]=60 [gabor70k]=40 [randconv]=90 [bench_cli]=90)
START=$(date +%s)

write_fallback() {  # step status seconds rc log: the JSON of a step that did not write one
    "$PY" - "$@" <<'PYEOF'
import json, sys
step, status, secs, rc, log = sys.argv[1:6]
try:
    tail = open(log, errors="replace").read()[-4000:]
except OSError:
    tail = ""
rec = {"step": step, "status": status, "seconds": float(secs), "returncode": int(rc),
       "log_tail": tail}
open(sys.argv[6], "w").write(json.dumps(rec, indent=1))
PYEOF
}

for step in $STEPS; do
    json="$OUT/$step.json"
    log="$OUT/$step.log"
    rm -f "$json"
    left=$(( BUDGET - ($(date +%s) - START) ))
    limit=${LIMIT[$step]:-60}
    if [ "$left" -lt "$limit" ]; then limit=$left; fi
    if [ "$limit" -lt 5 ]; then
        write_fallback "$step" "skipped: out of the device-time budget" 0 0 /dev/null "$json"
        echo "$step: skipped (budget)"
        continue
    fi
    t0=$(date +%s)
    timeout --kill-after=5 "$limit" "$PY" "$ROOT/benchmarks/device_steps.py" "$step" \
        --dev "$DEV" --data "$DATA" --out "$json" "${TINY[@]}" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - t0 ))
    if [ ! -f "$json" ]; then
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="timeout after ${limit} s"
        else status="crashed"; fi
        write_fallback "$step" "$status" "$secs" "$rc" "$log" "$json"
    fi
    tail -n 1 "$log"
done
"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = []
for p in sorted(out.glob("*.json")):
    try:
        r = json.loads(p.read_text())
    except ValueError:
        continue
    if "step" in r:
        rows.append(f"{r['step']:<16} {r.get('status', '?'):<12} "
                    f"{r.get('step_seconds', r.get('seconds', 0)):7.1f} s")
print("\n".join(["step             status        time"] + rows))
PYEOF
