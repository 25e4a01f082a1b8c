#!/usr/bin/env bash
# One training call on the GPU machine (device tool): resume runs/main, train MINUTES, send back the
# checkpoint (in ≤ 15 MB parts) and the loss log through $OUT/NAME/. Usage: [RUN=runs/NAME] bash training/device.sh MINUTES [--key value ...]
# Two runs can share the GPU: start one in the background (&) and one in front; each unpacks a pack only once.
# Real photos in the mix: carry cache/sfm, cache/labels and the photo folders packed as cache/real-faces.tgz
# and cache/celeb-faces-a.tgz, -b.tgz (unpacked here; spread over the first calls, README "Carrying it now"), and add
#   --real-labels cache/labels --real-photos cache --real-fraction 0.3
# DETECTOR="--key value ..." also trains the face detector (DETECTOR_RUN, default runs/detector, resumed) for the same call, beside
# it; its checkpoint and log come back as detector.ckpt.pt and detector.log.jsonl.
set -euo pipefail
export PYTHONPATH=src:. PYTHONUNBUFFERED=1 FACEVOX_SFM=cache/sfm FACEVOX_ICT=${FACEVOX_ICT:-src/facevox/models/ict_head.npz}
run=${RUN:-runs/main}
out="$OUT/${run##*/}"
mkdir -p "$run" "$out" cache
(
  flock 9  # a run started beside this one waits here until the packs are unpacked
  for pack in cache/*.tgz; do
    if [ -e "$pack" ] && [ ! -e "${pack%.tgz}.unpacked" ]; then tar xzf "$pack" -C cache && touch "${pack%.tgz}.unpacked"; fi
  done
) 9>cache/.unpack.lock
if compgen -G "$run/ckpt.pt.part*" >/dev/null; then  # parts carried to a fresh machine
  cat "$run"/ckpt.pt.part* > "$run/ckpt.pt" && rm "$run"/ckpt.pt.part*
fi
detector=""
if [ -n "${DETECTOR:-}" ]; then  # the face detector trains beside it: its scenes are composed on 10 CPU cores
  python3 -m training.train_detector --out "${DETECTOR_RUN:-runs/detector}" --workers 10 --minutes "$(python3 -c "print(max(0.5, $1 - 1.5))")" \
    $DETECTOR > "$out/detector.txt" 2>&1 &
  detector=$!
fi
status=0
python3 -m training.train --out "$run" --photos cache/real-faces --minutes "$1" "${@:2}" 2>&1 | tee "$out/train.txt" || status=$?
if [ -e "$run/ckpt.pt" ]; then split -b 15m -d "$run/ckpt.pt" "$out/ckpt.pt.part"; cp "$run/log.jsonl" "$out/log.jsonl"; fi
if [ -n "$detector" ]; then
  wait "$detector" || echo "the detector's training failed: see detector.txt"
  cp "${DETECTOR_RUN:-runs/detector}"/ckpt.pt "$out/detector.ckpt.pt" && cp "${DETECTOR_RUN:-runs/detector}"/log.jsonl "$out/detector.log.jsonl" || true
  grep '"step"' "$out/detector.txt" | tail -2 || true
fi
exit "$status"
