#!/usr/bin/env bash
# One training call on the GPU machine (device tool): resume runs/main, train MINUTES, send back the
# checkpoint (in ≤ 15 MB parts) and the loss log through $OUT. Usage: [RUN=runs/NAME] bash training/device.sh MINUTES [--key value ...]
# Real photos in the mix: carry cache/sfm, cache/labels and the photo folders packed as cache/real-faces.tgz
# and cache/celeb-faces.tgz (unpacked here; packed, the four fit the 64 MiB a call carries), and add
#   --real-labels cache/labels --real-photos cache --real-fraction 0.3
set -euo pipefail
export PYTHONPATH=src:. PYTHONUNBUFFERED=1 FACEVOX_SFM=cache/sfm
run=${RUN:-runs/main}
mkdir -p "$run"
for pack in cache/*.tgz; do if [ -e "$pack" ]; then tar xzf "$pack" -C cache; fi; done
if compgen -G "$run/ckpt.pt.part*" >/dev/null; then  # parts carried to a fresh machine
  cat "$run"/ckpt.pt.part* > "$run/ckpt.pt" && rm "$run"/ckpt.pt.part*
fi
python3 -m training.train --out "$run" --photos cache/real-faces --minutes "$1" "${@:2}" 2>&1 | tee "$OUT/train.txt"
split -b 15m -d "$run/ckpt.pt" "$OUT/ckpt.pt.part"
cp "$run/log.jsonl" "$OUT/log.jsonl"
