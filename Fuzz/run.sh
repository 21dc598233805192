#!/usr/bin/env bash
# Runs graft's libFuzzer targets one after another, on one core, and prints the
# executions of each. Called by `make fuzz`; see Fuzz/README.md.
#   Fuzz/run.sh BIN_DIR WORK_DIR SECONDS RUNS TARGET...
# SECONDS > 0 limits each target by time, else RUNS limits it by executions.
# FUZZ_KEEP_GOING=1 keeps fuzzing after a crash (libFuzzer -fork=1 -ignore_crashes=1,
# still one process at a time). Extra libFuzzer flags: FUZZ_ARGS.
set -u
bin=$1 work=$2 seconds=$3 runs=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work/logs" "$work/tmp"
# The Swift runtime's own backtracer is slow under ASan; libFuzzer prints the stack.
export SWIFT_BACKTRACE=enable=no
# The zstd target spools decompressed input here (each spool file is unlinked at once).
# (tmpfs when there is one: the spool writes every decompressed input.)
if [ -n "${FUZZ_TMPDIR:-}" ]; then export TMPDIR=$FUZZ_TMPDIR
elif [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm
else export TMPDIR="$work/tmp"; fi
# malloc_context_size=0: no stack trace per allocation (a third of the adapter targets'
# time went to ASan's allocation stack depot); reports still show the crash stack.
export ASAN_OPTIONS=${ASAN_OPTIONS:-malloc_context_size=0:symbolize=1}

rm -rf "$work/seeds"
"$bin/fuzz-seeds" "$work/seeds" >/dev/null || { echo "fuzz: seed generation failed" >&2; exit 2; }

limit="-max_total_time=$seconds"
[ "$seconds" -gt 0 ] 2>/dev/null || limit="-runs=$runs"
mode=""
[ "${FUZZ_KEEP_GOING:-0}" = 1 ] && mode="-fork=1 -ignore_crashes=1"

failed=()
printf '%-20s %12s %8s %8s  %s\n' target executions exec/s seconds result > "$work/summary.txt"
for t in "$@"; do
    corpus="$work/corpus/$t" crashes="$work/crashes/$t" log="$work/logs/$t.log"
    mkdir -p "$corpus" "$crashes"
    dict=""
    [ -f "$here/dict/$t.dict" ] && dict="-dict=$here/dict/$t.dict"
    echo "fuzz: $t ($limit${mode:+ $mode}), log in $log"
    start=$(date +%s)
    # shellcheck disable=SC2086
    "$bin/fuzz-$t" "$corpus" "$work/seeds/$t" $limit $mode $dict -artifact_prefix="$crashes/" \
        -print_final_stats=1 -max_len=65536 -rss_limit_mb=2048 -timeout=20 ${FUZZ_ARGS:-} >"$log" 2>&1
    status=$?
    elapsed=$(( $(date +%s) - start ))
    # Executions: libFuzzer's final stats, else the last status line ("#N ... exec/s: R").
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [ -z "$execs" ]; then
        last=$(grep -E '^#[0-9]+' "$log" | tail -1)
        execs=$(echo "$last" | sed -E 's/^#([0-9]+).*/\1/')
        rate=$(echo "$last" | sed -nE 's/.*exec\/s: ([0-9]+).*/\1/p')
    fi
    found=$(find "$crashes" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    result=ok
    if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
        result="FAILED (exit $status, $found artifact(s) in $crashes)"
        failed+=("$t")
    fi
    printf '%-20s %12s %8s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$elapsed" "$result" | tee -a "$work/summary.txt"
done
echo
cat "$work/summary.txt"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failing targets: ${failed[*]} (reproduce: $bin/fuzz-TARGET CRASH-FILE)" >&2
    exit 1
fi
