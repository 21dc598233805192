#!/usr/bin/env bash
# A short tour of graft on the bundled samples (what `make demo` runs).
#
#   usage: Samples/demo.sh GRAFT_BINARY
#
# Commands that do not exist yet in this build of graft are reported as
# "skipped: graft <cmd> not available yet"; the script exits 0 only when every
# command that exists succeeded.
set -u

if [ $# -ne 1 ]; then echo "usage: $0 GRAFT_BINARY" >&2; exit 64; fi
BIN=$1
case "$BIN" in */*) BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")" ;; esac
if ! [ -x "$BIN" ] && ! command -v "$BIN" >/dev/null; then echo "demo: $1 is not an executable" >&2; exit 2; fi

cd "$(dirname "$0")/.."          # commands below name Samples/... relative to the repository
tmp=$(mktemp -d "${TMPDIR:-/tmp}/graft-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

CKPT=Samples/sdxl-tiny.safetensors
LORA=Samples/lora-tiny.safetensors
LOCON=Samples/locon-tiny.safetensors
LOHA=Samples/loha-tiny.safetensors
failed=() ran=0 skipped=0
bold=; plain=
if [ -t 1 ]; then bold=$(printf '\033[1m'); plain=$(printf '\033[0m'); fi

# available CMD: the subcommand exists (its help works) and is not a placeholder
# (placeholders answer "not implemented" when run without arguments).
available() {
    "$BIN" help "$1" >/dev/null 2>&1 || "$BIN" "$1" --help >/dev/null 2>&1 || return 1
    ! "$BIN" "$1" </dev/null 2>&1 | grep -qi "not implemented"
}

# run TITLE ALLOWED_CODES CMD ARGS...: prints the command, runs it, records failures.
# ALLOWED_CODES is a space-separated list of exit codes that count as success.
run() {
    local title=$1 ok=$2 cmd=$3; shift 3
    printf '\n%s== %s%s\n' "$bold" "$title" "$plain"
    if ! available "$cmd"; then
        echo "skipped: graft $cmd not available yet"; skipped=$((skipped + 1)); return
    fi
    printf '$ graft %s' "$cmd"; printf ' %q' "$@"; printf '\n'
    local err="$tmp/stderr" rc=0
    "$BIN" "$cmd" "$@" 2>"$err" || rc=$?
    if grep -qi "not implemented" "$err"; then
        echo "skipped: graft $cmd not available yet"; skipped=$((skipped + 1)); return
    fi
    cat "$err" >&2
    ran=$((ran + 1))
    case " $ok " in
        *" $rc "*) ;;
        *) echo "FAILED: graft $cmd exited with status $rc"; failed+=("$cmd ($title)") ;;
    esac
}

echo "graft demo on the bundled samples (synthetic SDXL at 1/64 width; see Samples/README.md)"

run "What is in the checkpoint (one transformer block shown)" "0" \
    list "$CKPT" --filter '*middle_block.1.transformer_blocks.0.attn2*'

run "What is in the LoRA (TE2 layer 0 attention shown)" "0" \
    list "$LORA" --filter '*te2_text_model_encoder_layers_0_self_attn*'

run "Merge the LoRA at strength 1 and the LoCon at 0.5" "0" \
    merge "$CKPT" "$LORA:1" "$LOCON:0.5" -o "$tmp/merged.safetensors"

if [ -f "$tmp/merged.safetensors" ]; then
    # diff exits 1 when the files differ, which they must here.
    run "What the merge changed" "0 1" \
        diff "$CKPT" "$tmp/merged.safetensors"
    run "Convert the merged model to bf16" "0" \
        convert "$tmp/merged.safetensors" --dtype bf16 -o "$tmp/merged-bf16.safetensors"
    if [ -f "$tmp/merged-bf16.safetensors" ]; then
        ls -l "$CKPT" "$tmp/merged.safetensors" "$tmp/merged-bf16.safetensors" | awk '{print $5, $NF}'
    fi
else
    printf '\n'
    for cmd in diff convert; do echo "skipped: graft $cmd (needs the merged file)"; skipped=$((skipped + 1)); done
fi

run "Merge a LyCORIS LoHa at 0.8 (LoKr, DoRA, OFT... merge the same way)" "0" \
    merge "$CKPT" "$LOHA:0.8" -o "$tmp/merged-loha.safetensors"

printf '\n%s== Summary%s\n' "$bold" "$plain"
echo "$ran command(s) ran, $skipped skipped, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
    printf '  failed: %s\n' "${failed[@]}"
    exit 1
fi
exit 0
