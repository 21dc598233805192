#!/usr/bin/env bash
# Speed and memory of graft against plain copies of the same bytes (what `make bench` runs).
#
#   usage: Samples/bench.sh BUILD_DIR CACHE_DIR [--fp32]
#
#   BUILD_DIR  holds the release binaries graft and graft-samplegen (graft-kbench is optional)
#   CACHE_DIR  where the full-size SDXL inputs are generated once (~7.8 GB) and outputs
#              are written during a run (same file system), then removed
#   --fp32     (or BENCH_FP32=1) also generate a 13.9 GB fp32 checkpoint and time
#              fp32 -> fp16 conversion; peak disk use then grows from ~22 GB to ~36 GB
#   RUNS=N     runs per measurement (default 3; the median is reported)
#
# Every measurement starts from a warm page cache (inputs read with cat first) and a
# synced disk; graft and its baseline alternate. Writes include the fsync (graft's atomic
# output syncs; the baseline is `cp … && sync FILE`). Peak memory is the largest RssAnon
# of the graft process sampled every 20 ms: anonymous memory only, pages of mapped
# files are page cache and do not count. GB = 1e9 bytes. Order: merge (its last output is
# kept for diff), the LyCORIS merges (LoHa, LoKr, DoRA; skipped while graft does not merge
# that kind), diff, list, convert, kernels; peak disk use is about 22 GB (inputs 7.8 GB,
# merged file, one copy), or 36 GB with --fp32.
set -u
export LC_ALL=C

usage() { echo "usage: $0 BUILD_DIR CACHE_DIR [--fp32]" >&2; exit 64; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
BUILD=$1 CACHE=$2
FP32=${BENCH_FP32:-0}
if [ $# -eq 3 ]; then [ "$3" = --fp32 ] || usage; FP32=1; fi
RUNS=${RUNS:-3}
GRAFT=$BUILD/graft SAMPLEGEN=$BUILD/graft-samplegen KBENCH=$BUILD/graft-kbench
for b in "$GRAFT" "$SAMPLEGEN"; do
    [ -x "$b" ] || { echo "bench: $b not found; build first (swift build -c release)" >&2; exit 2; }
done

mkdir -p "$CACHE" || exit 2
free_gb() { df -Pk "$CACHE" | awk 'NR == 2 { printf "%d", $4 / 1e6 }'; }

# ---- inputs --------------------------------------------------------------------------
need=9; [ "$FP32" = 1 ] && need=23
echo "== inputs in $CACHE (generated once; $(free_gb) GB free)"
if [ "$(free_gb)" -lt "$need" ] && ! [ -f "$CACHE/sdxl-full-fp16.safetensors" ]; then
    echo "bench: need about $need GB free in $CACHE" >&2; exit 2
fi
if [ "$FP32" = 1 ]; then "$SAMPLEGEN" bench "$CACHE" --fp32 || exit 2
else "$SAMPLEGEN" bench "$CACHE" || exit 2; fi

CKPT=$CACHE/sdxl-full-fp16.safetensors
CKPT32=$CACHE/sdxl-full-fp32.safetensors
LORA=$CACHE/lora-r32.safetensors
LOCON=$CACHE/locon-r16.safetensors
LOHA=$CACHE/loha-d16.safetensors
LOKR=$CACHE/lokr-f8.safetensors
DORA=$CACHE/dora-r32.safetensors
OUT=$CACHE/bench-out.safetensors
OUT2=$CACHE/bench-copy.safetensors
MERGED=$CACHE/bench-merged.safetensors

tmp=$(mktemp -d "${TMPDIR:-/tmp}/graft-bench.XXXXXX")
cleanup() { rm -rf "$tmp"; rm -f "$OUT" "$OUT2" "$MERGED" "$CACHE"/.bench-*.graft-partial-*; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkfifo "$tmp/tick" && exec 9<>"$tmp/tick"   # `read -t` on it sleeps without forking

size_of() { stat -c %s "$1"; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
warm() { for f in "$@"; do cat "$f" >/dev/null; done; }
remove() { rm -f "$@"; }

# Runs graft with the given arguments, sampling its RssAnon. Sets SECONDS_TAKEN, RC,
# PEAK_KB; stdout goes to $tmp/stdout, stderr to $tmp/stderr. RC 99 = not implemented,
# RC 98 = an adapter kind graft does not merge yet ("… modules are not merged by graft yet").
run_graft() {
    local start end peak=0 state key value
    start=$(now)
    "$GRAFT" "$@" >"$tmp/stdout" 2>"$tmp/stderr" &
    local pid=$!
    while [ -r "/proc/$pid/status" ]; do
        state=
        while read -r key value _; do
            case $key in
                State:) state=$value ;;
                RssAnon:) [ "$value" -gt "$peak" ] && peak=$value ;;
            esac
        done <"/proc/$pid/status" 2>/dev/null
        [ "$state" = Z ] && break
        read -r -t 0.02 -u 9 _
    done
    wait "$pid"; RC=$?
    end=$(now)
    SECONDS_TAKEN=$(calc "$end - $start" 4)
    PEAK_KB=$peak
    if [ "$RC" -ne 0 ] && grep -qi "not implemented" "$tmp/stderr"; then RC=99; fi
    if [ "$RC" -ne 0 ] && grep -qi "not merged by graft yet" "$tmp/stderr"; then RC=98; fi
}

# Runs graft without the memory sampler (for short runs); sets SECONDS_TAKEN and RC.
run_graft_plain() {
    local start end
    start=$(now)
    "$GRAFT" "$@" >"$tmp/stdout" 2>"$tmp/stderr"; RC=$?
    end=$(now)
    if [ "$RC" -ne 0 ] && grep -qi "not merged by graft yet" "$tmp/stderr"; then RC=98; fi
    SECONDS_TAKEN=$(calc "$end - $start" 4)
}

# Runs a shell command (the baseline) and sets SECONDS_TAKEN.
run_baseline() {
    local start end
    start=$(now)
    bash -c "$1" >/dev/null 2>"$tmp/stderr" || { echo "bench: baseline failed: $1" >&2; cat "$tmp/stderr" >&2; exit 2; }
    end=$(now)
    SECONDS_TAKEN=$(calc "$end - $start" 4)
}

ROWS=()   # name|graft s|baseline s|ratio|GB/s|notes
row() { ROWS+=("$1|$2|$3|$4|$5|$6"); }
skip_row() { echo "skipped: $2"; ROWS+=("$1|-|-|-|-|skipped: $2"); }
fail_row() {
    echo "FAILED: graft $2 (exit $RC):" >&2; sed 's/^/  /' "$tmp/stderr" | tail -5 >&2
    ROWS+=("$1|-|-|-|-|FAILED (exit $RC)"); FAILED=1
}
FAILED=0
# graft_has CMD: the subcommand exists and is not a placeholder (placeholders answer
# "not implemented" when run without arguments).
graft_has() {
    "$GRAFT" help "$1" >/dev/null 2>&1 || "$GRAFT" "$1" --help >/dev/null 2>&1 || return 1
    ! "$GRAFT" "$1" </dev/null 2>&1 | grep -qi "not implemented"
}
enough_disk() {  # enough_disk BYTES: free space for one more output plus 2 GB margin
    [ "$(df -Pk "$CACHE" | awk 'NR == 2 { print $4 }')" -gt $(($1 / 1024 + 2000000)) ]
}

# json_field KEY: the top-level number KEY of graft's --json report in $tmp/stdout, or "".
json_field() {
    FIELD=$(python3 -c 'import json, sys
d = json.load(open(sys.argv[1])); v = d.get(sys.argv[2]) if isinstance(d, dict) else None
print(v if isinstance(v, (int, float)) else "")' "$tmp/stdout" "$1" 2>/dev/null) ||
    FIELD=$(grep -oE "\"$1\" *: *[0-9.eE+-]+" "$tmp/stdout" | tail -1 | sed 's/.*: *//')
}

# unsupported_reason: the first "… not merged by graft yet" reason in $tmp/stderr.
unsupported_reason() { grep -im1 "not merged by graft yet" "$tmp/stderr" | sed 's/^ *[^ :]*: //'; }

# compare NAME OUTBYTES BASEBYTES INPUTS "GRAFT ARGS" "BASELINE" [KEEP]: alternates graft
# and the baseline RUNS times each. GB/s is bytes written per second (OUTBYTES for graft,
# BASEBYTES for the baseline). KEEP names a path to keep the last graft output at.
# On success sets LAST_RATIO (graft / baseline) and LAST_PEAK_KB (median peak RssAnon).
compare() {
    local name=$1 outbytes=$2 basebytes=$3 inputs=$4 gargs=$5 base=$6 keep=${7:-}
    local gs=() bs=() peaks=() i flops= fsec=
    LAST_RATIO= LAST_PEAK_KB=
    echo
    echo "== $name ($RUNS runs each, warm cache)"
    if ! graft_has "${gargs%% *}"; then skip_row "$name" "graft ${gargs%% *} not available yet"; return; fi
    if ! enough_disk "$outbytes"; then skip_row "$name" "not enough disk space for a $((outbytes / 1000000)) MB output"; return; fi
    for ((i = 1; i <= RUNS; i++)); do
        # shellcheck disable=SC2086
        warm $inputs; sync
        eval "run_graft $gargs"
        if [ "$RC" = 99 ]; then remove "$OUT"; skip_row "$name" "graft ${gargs%% *} not available yet"; return; fi
        if [ "$RC" = 98 ]; then remove "$OUT"; skip_row "$name" "$(unsupported_reason)"; return; fi
        if [ "$RC" -ne 0 ]; then remove "$OUT"; fail_row "$name" "${gargs%% *}"; return; fi
        gs+=("$SECONDS_TAKEN"); peaks+=("$PEAK_KB")
        json_field flops; flops=$FIELD
        json_field seconds; fsec=$FIELD
        if [ -n "$keep" ] && [ "$i" -eq "$RUNS" ]; then mv -f "$OUT" "$keep"; else remove "$OUT"; fi
        # shellcheck disable=SC2086
        warm $inputs; sync
        run_baseline "$base"
        bs+=("$SECONDS_TAKEN")
        remove "$OUT2"
        printf '  run %d: graft %6.2f s (peak anon %4d MB)   baseline %6.2f s\n' "$i" "${gs[-1]}" $((PEAK_KB / 1024)) "$SECONDS_TAKEN"
    done
    local g b peak note
    g=$(median "${gs[@]}"); b=$(median "${bs[@]}"); peak=$(median "${peaks[@]}")
    note="peak anon $((${peak%.*} / 1024)) MB; baseline $(calc "$basebytes / $b / 1e9" 2) GB/s"
    if [ -n "$flops" ]; then
        local s=${fsec:-$g}
        note="$note; $(calc "$flops / $s / 1e9" 1) GFLOP/s"
    fi
    row "$name" "$(calc "$g" 2)" "$(calc "$b" 2)" "$(calc "$g / $b" 2)x" "$(calc "$outbytes / $g / 1e9" 2)" "$note"
    LAST_RATIO=$(calc "$g / $b" 4) LAST_PEAK_KB=${peak%.*}
}

# targets MAX_RATIO MAX_PEAK_GB: appends to the last row whether compare's median met the
# time target (graft / baseline <= MAX_RATIO) and the memory target (peak anon < MAX_PEAK_GB).
targets() {
    [ -n "$LAST_RATIO" ] || return 0
    local missed=
    awk "BEGIN { exit !($LAST_RATIO <= $1) }" || missed="time"
    awk "BEGIN { exit !($LAST_PEAK_KB * 1024 < $2 * 1e9) }" || missed="${missed:+$missed and }memory"
    ROWS[-1]="${ROWS[-1]}; targets <= $1x, < $2 GB: ${missed:+MISSED ($missed)}"
    [ -n "$missed" ] || ROWS[-1]="${ROWS[-1]}met"
}

# merge_one NAME ADAPTER: merges one adapter at strength 1 into the fp16 checkpoint against
# `cp` + `sync` of the checkpoint. A header-only dry run goes first, so that an adapter kind
# graft does not merge yet is skipped (with graft's reason) without warming or timing.
merge_one() {
    local name=$1 adapter=$2
    if [ ! -f "$adapter" ]; then echo; echo "== $name"; skip_row "$name" "no input $adapter"; return; fi
    if graft_has merge; then
        run_graft_plain merge "$CKPT" "$adapter:1" -o "$OUT" --force --dry-run
        if [ "$RC" = 98 ]; then echo; echo "== $name"; skip_row "$name" "$(unsupported_reason)"; return; fi
    fi
    compare "$name" "$CKPT_BYTES" "$CKPT_BYTES" "$CKPT $adapter" \
        "merge '$CKPT' '$adapter:1' -o '$OUT' --force --json" \
        "cp '$CKPT' '$OUT2' && sync '$OUT2'"
    targets 1.0 1
}

CKPT_BYTES=$(size_of "$CKPT")

# ---- merge ---------------------------------------------------------------------------
compare "merge fp16 + r32 LoRA:1 + r16/8 LoCon:0.5" "$CKPT_BYTES" "$CKPT_BYTES" "$CKPT $LORA $LOCON" \
    "merge '$CKPT' '$LORA:1' '$LOCON:0.5' -o '$OUT' --force --json" \
    "cp '$CKPT' '$OUT2' && sync '$OUT2'" "$MERGED"

# LyCORIS and DoRA (full SDXL, strength 1): LoHa dim 16 / alpha 8 and LoKr factor 8 (both
# factors whole) on the 722 UNet attention and feed-forward modules; the r32 LoRA above with
# `dora_scale` magnitudes on the output axis (986 modules). Targets: <= 1.0x cp + sync and
# peak anon < 1 GB.
merge_one "merge LoHa d16" "$LOHA"
merge_one "merge LoKr f8" "$LOKR"
merge_one "merge DoRA r32 (out)" "$DORA"

# ---- diff ----------------------------------------------------------------------------
echo
echo "== diff checkpoint vs merged (the last merge output) ($RUNS runs each, warm cache)"
if ! graft_has diff; then
    remove "$MERGED"; skip_row "diff (vs cat A B)" "graft diff not available yet"
elif [ -f "$MERGED" ]; then
    gs=() bs=() peaks=()
    for ((i = 1; i <= RUNS; i++)); do
        warm "$CKPT" "$MERGED"
        run_graft diff "$CKPT" "$MERGED"
        [ "$RC" = 0 ] || [ "$RC" = 1 ] || break    # 1 = differences found
        gs+=("$SECONDS_TAKEN"); peaks+=("$PEAK_KB")
        warm "$CKPT" "$MERGED"
        run_baseline "cat '$CKPT' '$MERGED' >/dev/null"
        bs+=("$SECONDS_TAKEN")
        printf '  run %d: graft %6.2f s   cat %6.2f s\n' "$i" "${gs[-1]}" "$SECONDS_TAKEN"
    done
    if [ "$RC" = 0 ] || [ "$RC" = 1 ]; then
        g=$(median "${gs[@]}"); b=$(median "${bs[@]}")
        row "diff (vs cat A B)" "$(calc "$g" 2)" "$(calc "$b" 2)" "$(calc "$g / $b" 2)x" \
            "$(calc "2 * $CKPT_BYTES / $g / 1e9" 2)" "GB/s of both inputs read; peak anon $(($(median "${peaks[@]}" | cut -d. -f1) / 1024)) MB"
    elif [ "$RC" = 99 ]; then skip_row "diff (vs cat A B)" "graft diff not available yet"
    else fail_row "diff (vs cat A B)" diff; fi
    remove "$MERGED"
else
    skip_row "diff (vs cat A B)" "no merged file (merge did not run)"
fi

# ---- list ----------------------------------------------------------------------------
echo
echo "== list (header only, 10 runs) and list --stats ($RUNS runs)"
warm "$CKPT"
times=()
for ((i = 1; i <= 10; i++)); do
    run_graft_plain list "$CKPT"
    [ "$RC" -eq 0 ] || break
    times+=("$SECONDS_TAKEN")
done
if [ "$RC" -eq 0 ]; then
    ms=$(calc "$(median "${times[@]}") * 1000" 1)
    echo "  graft list: median $ms ms"
    row "list (header only)" "$(calc "$ms / 1000" 3)" "-" "-" "-" "median $ms ms (process start to exit); target < 50 ms"
else
    fail_row "list (header only)" list
fi
times=() peaks=()
for ((i = 1; i <= RUNS; i++)); do
    warm "$CKPT"
    run_graft list --stats "$CKPT"
    [ "$RC" -eq 0 ] || break
    times+=("$SECONDS_TAKEN"); peaks+=("$PEAK_KB")
done
if [ "$RC" -eq 0 ]; then
    s=$(median "${times[@]}")
    echo "  graft list --stats: median $(calc "$s" 2) s"
    row "list --stats" "$(calc "$s" 2)" "-" "-" "$(calc "$CKPT_BYTES / $s / 1e9" 2)" "GB/s of tensor data read; peak anon $(($(median "${peaks[@]}" | cut -d. -f1) / 1024)) MB"
elif [ "$RC" = 99 ]; then skip_row "list --stats" "graft list --stats not available yet"
else fail_row "list --stats" "list --stats"; fi

# ---- convert -------------------------------------------------------------------------
compare "convert fp16 -> fp32 (vs cp of the input)" $((CKPT_BYTES * 2)) "$CKPT_BYTES" "$CKPT" \
    "convert '$CKPT' --dtype fp32 -o '$OUT' --force" \
    "cp '$CKPT' '$OUT2' && sync '$OUT2'"
if [ -f "$CKPT32" ]; then
    compare "convert fp32 -> fp16 (vs cp of the input)" "$CKPT_BYTES" "$(size_of "$CKPT32")" "$CKPT32" \
        "convert '$CKPT32' --dtype fp16 -o '$OUT' --force" \
        "cp '$CKPT32' '$OUT2' && sync '$OUT2'"
else
    echo; skip_row "convert fp32 -> fp16" "no fp32 input (run with --fp32 or BENCH_FP32=1)"
fi

# ---- kernels -------------------------------------------------------------------------
echo
echo "== conversion kernels"
if [ -x "$KBENCH" ]; then
    "$KBENCH" | tee "$tmp/kbench"
    row "kernels (graft-kbench)" "-" "-" "-" "-" "see graft-kbench output above"
else
    skip_row "kernels" "graft-kbench not built"
fi

# ==== zstd output (added with graft diff/convert, issue #4) ================================
# graft writes .safetensors.zst itself (streaming, in file order, libzstd with all cores).
# Measures the compression ratio and MB/s on the fp16 checkpoint, against `zstd -3 -T0` of
# the same file (+ sync). Note: the synthetic checkpoint repeats 16 MiB value pools, so its
# ratio is better than a real checkpoint's (~1.09x measured on random-like fp16 weights).
ZOUT=$CACHE/bench-out.safetensors.zst
trap 'cleanup; rm -f "$ZOUT"' EXIT
echo
echo "== zstd: graft convert --dtype fp16 -o X.safetensors.zst (level 3) vs zstd -3 -T0 ($RUNS runs each, warm cache)"
if ! graft_has convert; then
    skip_row "zstd write (level 3)" "graft convert not available yet"
elif ! enough_disk "$CKPT_BYTES"; then
    skip_row "zstd write (level 3)" "not enough disk space"
else
    gs=() bs=() peaks=() zbytes=0
    for ((i = 1; i <= RUNS; i++)); do
        warm "$CKPT"; sync
        run_graft convert "$CKPT" --dtype fp16 -o "$ZOUT" --force
        [ "$RC" -eq 0 ] || break
        gs+=("$SECONDS_TAKEN"); peaks+=("$PEAK_KB")
        zbytes=$(size_of "$ZOUT"); remove "$ZOUT"
        if command -v zstd >/dev/null; then
            warm "$CKPT"; sync
            run_baseline "zstd -q -3 -T0 -f '$CKPT' -o '$OUT2' && sync '$OUT2'"
            bs+=("$SECONDS_TAKEN"); remove "$OUT2"
        fi
        printf '  run %d: graft %6.2f s (%d MB -> %d MB)   zstd %s s\n' "$i" "${gs[-1]}" $((CKPT_BYTES / 1000000)) $((zbytes / 1000000)) "${bs[-1]:--}"
    done
    if [ "$RC" -eq 0 ]; then
        g=$(median "${gs[@]}")
        if [ ${#bs[@]} -gt 0 ]; then b=$(median "${bs[@]}"); br=$(calc "$g / $b" 2)x; b=$(calc "$b" 2); else b=-; br=-; fi
        row "zstd write (convert -> .zst, level 3)" "$(calc "$g" 2)" "$b" "$br" "$(calc "$CKPT_BYTES / $g / 1e9" 2)" \
            "ratio $(calc "$CKPT_BYTES / $zbytes" 3) ($((CKPT_BYTES / 1000000)) -> $((zbytes / 1000000)) MB), $(calc "$CKPT_BYTES / $g / 1e6" 0) MB/s uncompressed; peak anon $(($(median "${peaks[@]}" | cut -d. -f1) / 1024)) MB"
    else
        fail_row "zstd write (level 3)" convert
    fi
fi
# ==== end of the zstd block ===============================================================

# ---- table ---------------------------------------------------------------------------
echo
echo "== summary (medians of $RUNS runs; ratio = graft / baseline time, lower is better; GB/s = output bytes / s)"
{
    echo "benchmark|graft s|baseline s|ratio|GB/s|notes"
    printf '%s\n' "${ROWS[@]}"
} | awk -F'|' '
    { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NR; f = NF }
    END { for (r = 1; r <= n; r++) { line = ""; for (i = 1; i <= f; i++) line = line sprintf(i < f ? "%-" w[i] "s  " : "%s", cell[r, i]); print line } }'
exit "$FAILED"
