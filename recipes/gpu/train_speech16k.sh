#!/usr/bin/env bash
# Train speech-16k for one call of the lent GPU (device `run`, at most 10 minutes); see README.md here.
#
#   device run:  AUDIOKIT_COMMIT=<git rev-parse HEAD here> bash recipes/gpu/train_speech16k.sh
#         carry: runs/pack-speech16k runs/pack-valid16k runs/gpu-wheels [runs/gpu-in]
#   check here:  CHECK=1 bash recipes/gpu/train_speech16k.sh   (what would travel, in MiB; no training)
#   CPU rehearsal: PYTHON=.venv/bin/python DEVICE=cpu MAX_STEPS=2 BATCH=2 WORKERS=0 OUT=/tmp/gpu-out \
#                  bash recipes/gpu/train_speech16k.sh
#
# It checks the python packages (installing carried wheels when some are missing), picks what to start
# from (an exact --resume of RUN_DIR if a checkpoint is there, else --init from the newest weights that
# fit the recipe: runs/gpu-in/ from the previous call, then the shipped audiokit/weights/speech-16k), trains on the
# carried pack with --max-minutes, and copies the EMA weights, logs and lineage.json into $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
START=$SECONDS

PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
RECIPE=${RECIPE:-recipes/codec_speech16k.yaml}
PACK=${PACK:-runs/pack-speech16k}              # train pack (audiokit data pack ... runs/pack-speech16k)
VALID_PACK=${VALID_PACK:-runs/pack-valid16k}   # validation pack; absent: no evaluation on the device
NOISE_PACK=${NOISE_PACK:-}                     # noise pack for data.noise (the enhancer's recipe); empty: none
WHEELS=${WHEELS:-runs/gpu-wheels}              # cp312 wheels + pesq sdist for packages the image lacks
GPU_IN=${GPU_IN:-runs/gpu-in}                  # what the previous call brought back (model.*, lineage.json)
INIT=${INIT:-auto}                             # auto | none | a .safetensors path or model directory
RUN_DIR=${RUN_DIR:-runs/gpu-speech16k}
OUT=${OUT:-runs/gpu-out}
MAX_MINUTES=${MAX_MINUTES:-7.5}                # training time of this call (the final eval comes after)
MAX_STEPS=${MAX_STEPS:-}
DEADLINE_S=${DEADLINE_S:-580}                  # everything, copying included, ends by then (device: 600)
BATCH=${BATCH:-64}
WORKERS=${WORKERS:-12}
EVAL_EVERY=${EVAL_EVERY:-1000000}              # evaluate only at the end of the call
EVAL_FILES=${EVAL_FILES:-40}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-500}
WARMUP=${WARMUP:-}                             # LR warm-up steps; default: recipe's from scratch, 100 after --init
SEED=${SEED:-}                                 # default: the number of earlier calls (new crops each call)
RETURN=${RETURN:-weights}                      # weights (EMA) | checkpoint (all of latest.pt, if it fits)
EXTRA_SET=${EXTRA_SET:-}                       # more recipe overrides: "optim.learning_rate=2e-4 ..."
MODULES="torch numpy scipy soundfile soxr safetensors yaml tqdm"   # training needs these
EVAL_MODULES="pesq pystoi"                                          # evaluation needs these too

for name in PACK VALID_PACK NOISE_PACK; do  # --set data.train/valid/noise need absolute paths
    [ -z "${!name}" ] || [[ "${!name}" == /* ]] || printf -v "$name" '%s' "$PWD/${!name}"
done

say() { echo "gpu: $*"; }
fail() { echo "gpu: ERROR: $1" >&2; exit "${2:-1}"; }
# shellcheck source=recipes/gpu/carried.sh
. recipes/gpu/carried.sh

if [ -n "${CHECK:-}" ]; then  # here, before calling the device: the size of what would travel
    tracked=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
    untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r stat -c %s | awk '{s+=$1} END {print s+0}')
    carried=0
    for path in "$PACK" "$VALID_PACK" "$NOISE_PACK" "$WHEELS" "$GPU_IN"; do
        [ -n "$path" ] || continue
        [ -e "$path" ] || continue
        size=$(du -sb "$path" | cut -f1)
        carried=$((carried + size))
        echo "carry $path: $(awk -v b="$size" 'BEGIN {printf "%.1f", b / 1048576}') MiB"
    done
    total=$((tracked + untracked + carried))
    awk -v t="$tracked" -v u="$untracked" -v c="$carried" -v a="$total" 'BEGIN {
        printf "tracked %.1f MiB + untracked %.1f MiB + carried %.1f MiB = %.1f MiB of 64 MiB\n",
            t / 1048576, u / 1048576, c / 1048576, a / 1048576 }'
    [ "$total" -le $((64 * 1048576)) ] || fail "over the device's 64 MiB: build a smaller pack (--max-mb)"
    exit 0
fi

# 1. python packages
missing=$($PYTHON recipes/gpu/gpu_helper.py missing $MODULES $EVAL_MODULES)
if [ -n "$missing" ] && [ -d "$WHEELS" ]; then
    say "installing carried packages for: $missing"
    install_carried "$WHEELS" $missing
fi
missing=$($PYTHON recipes/gpu/gpu_helper.py missing $MODULES)
[ -z "$missing" ] || fail "python packages missing: $missing (carry $WHEELS built as in recipes/gpu/README.md)" 3
evaluate=1
missing=$($PYTHON recipes/gpu/gpu_helper.py missing $EVAL_MODULES)
if [ -n "$missing" ]; then  # train anyway, without evaluation; evaluate what comes back at home
    say "missing $missing: NO EVALUATION on the device (audiokit.metrics imports pesq: a stand-in raises if used)"
    evaluate=0
    [[ " $missing " == *" pesq "* ]] && stub_pesq
fi
$PYTHON -c "import sys, torch; print('gpu: python', sys.version.split()[0], 'torch', torch.__version__,
      'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
if [[ "$DEVICE" == cuda* ]]; then
    $PYTHON -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" ||
        fail "DEVICE=$DEVICE but torch sees no CUDA device" 4
fi

# 2. data
[ -f "$PACK/manifest.jsonl" ] || fail "no pack at $PACK: build it with audiokit data pack and carry it" 5
$PYTHON -c "import json; p = json.load(open('$PACK/PACK.json')); print('gpu: train pack $PACK:', p['clips'],
      'clips,', p['hours'], 'h,', round(p['bytes'] / 2**20, 1), 'MiB,', p['codec'], p['kbps'], 'kbit/s')"
sets=(--set "data.train=$PACK/manifest.jsonl" --set "data.batch_size=$BATCH"
      --set "data.num_workers=$WORKERS" --set "eval.every_steps=$EVAL_EVERY" --set "eval.max_files=$EVAL_FILES"
      --set "run.checkpoint_every=$CHECKPOINT_EVERY")
if [ "$evaluate" = 1 ] && [ -f "$VALID_PACK/manifest.jsonl" ]; then
    sets+=(--set "data.valid=$VALID_PACK/manifest.jsonl")
else
    [ "$evaluate" = 1 ] && say "no validation pack at $VALID_PACK: no evaluation on the device"
    sets+=(--set "data.valid=null")
fi
if [ -n "$NOISE_PACK" ]; then
    [ -f "$NOISE_PACK/manifest.jsonl" ] || fail "no noise pack at $NOISE_PACK: build it with audiokit data pack" 5
    sets+=(--set "data.noise=$NOISE_PACK/manifest.jsonl")
fi
extra=()
for kv in $EXTRA_SET; do extra+=(--set "$kv"); done

# 3. where to start
previous=""
[ -f "$GPU_IN/lineage.json" ] && previous="$GPU_IN/lineage.json"
start=()
if [ -f "$RUN_DIR/checkpoints/latest.pt" ]; then
    [ -f "$RUN_DIR/lineage.json" ] && previous="$RUN_DIR/lineage.json"
    start=(--resume)
    started_from=resume
    RECIPE="$RUN_DIR/recipe.yaml"  # the run's resolved recipe: same warm-up, seed and data as before
    say "resuming $RUN_DIR exactly (optimisers included) with its $RECIPE"
else
    overrides=()
    for kv in $EXTRA_SET; do overrides+=("$kv"); done
    case "$INIT" in
        none) candidates=() ;;
        auto) candidates=("$GPU_IN/model.safetensors" audiokit/weights/speech-16k.safetensors) ;;
        *) candidates=("$INIT") ;;
    esac
    chosen=""
    if [ ${#candidates[@]} -gt 0 ]; then
        chosen=$($PYTHON recipes/gpu/gpu_helper.py init "$RECIPE" "${candidates[@]}" -- "${overrides[@]}") ||
            fail "could not check the starting weights"
    fi
    if [ -n "$chosen" ]; then
        start=(--init "$chosen")
        started_from=$chosen
        sets+=(--set "schedule.warmup_steps=${WARMUP:-100}")
        say "starting from the weights $chosen (fresh optimiser, warm-up ${WARMUP:-100} steps)"
    else
        [ "$INIT" = auto ] || [ "$INIT" = none ] || fail "INIT=$INIT does not fit $RECIPE" 6
        started_from=scratch
        [ -n "$WARMUP" ] && sets+=(--set "schedule.warmup_steps=$WARMUP")
        say "starting from scratch"
    fi
fi
if [ "$started_from" != resume ]; then
    SEED=${SEED:-$($PYTHON recipes/gpu/gpu_helper.py lineage "$previous")}
    sets+=(--set "run.seed=$SEED")
    say "seed $SEED"
fi

# 4. train, inside the call's deadline
left=$((DEADLINE_S - (SECONDS - START) - 30))
if [ "$left" -lt 150 ]; then
    say "only $left s left of the call after setup: not enough to train; nothing was run"
    exit 5
fi
budget_min=$(awk -v l="$left" -v m="$MAX_MINUTES" 'BEGIN {b = (l - 90) / 60; print (m < b ? m : b)}')
[ "$budget_min" != "$MAX_MINUTES" ] && say "MAX_MINUTES lowered to $budget_min to leave time for eval and copying"
limits=(--max-minutes "$budget_min")
[ -n "$MAX_STEPS" ] && limits+=(--max-steps "$MAX_STEPS")
mkdir -p "$RUN_DIR"
log="$RUN_DIR/train.log"
say "$PYTHON -m audiokit train $RECIPE --run-dir $RUN_DIR --device $DEVICE ${start[*]} ${limits[*]} ${sets[*]} ${extra[*]}"
PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30 timeout --signal=INT --kill-after=15 "$left" \
    $PYTHON -m audiokit train "$RECIPE" --run-dir "$RUN_DIR" --device "$DEVICE" "${start[@]}" "${limits[@]}" \
    "${sets[@]}" "${extra[@]}" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
say "training exited with $status after $((SECONDS - START)) s"

# 5. bring back what fits
$PYTHON recipes/gpu/gpu_helper.py collect "$RUN_DIR" "$OUT" "$previous" "$started_from" "$PACK" "$log" "$RETURN"
say "done in $((SECONDS - START)) s; to continue, put what came back in $GPU_IN (see recipes/gpu/README.md)"
# timeout's 124 would read as the device call itself timing out: report a stop at the deadline as 0
[ "$status" = 124 ] && say "training stopped at the call's deadline (timeout); its last checkpoint came back" && status=0
exit "$status"
