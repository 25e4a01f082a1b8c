#!/usr/bin/env bash
# One device call: the old loop (commit 49a916b's training/, unpacked first with
#   mkdir -p runs/before && git archive 49a916b training | tar -x -C runs/before
# and carried with cache/sfm, cache/labels, cache/*.tgz and runs/before) timed for 0.6 minutes, the new
# loop's variants by training/throughput.py, then stage H trained for the rest of the call.
set -uo pipefail
export PYTHONPATH=src:. PYTHONUNBUFFERED=1 FACEVOX_SFM=cache/sfm FACEVOX_ICT=src/facevox/models/ict_head.npz
for p in cache/*.tgz; do tar xzf $p -C cache; done
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
echo "unpacked at $SECONDS s"
(cd runs/before && PYTHONPATH=../../src:. FACEVOX_SFM=../../cache/sfm timeout 150 python3 -m training.train --out ../old \
  --photos ../../cache/real-faces --real-labels ../../cache/labels --real-photos ../../cache \
  --init-onnx ../../src/facevox/models/vrn-hg2-w192.onnx --minutes 0.6 --eval-every 100000 --lr 1e-6) > $OUT/old_loop.txt 2>&1
cp runs/old/log.jsonl $OUT/old_loop_log.jsonl; tail -3 $OUT/old_loop.txt
echo "old loop done at $SECONDS s"
DATA="--real-labels cache/labels --real-photos cache --photos cache/real-faces --init-onnx src/facevox/models/vrn-hg2-w192.onnx"
timeout 330 python3 -m training.throughput $DATA --variants "batch_size=32,ahead=0" "batch_size=32,ahead=2" \
  "batch_size=128,ahead=0" "batch_size=128,ahead=2" "batch_size=128,ahead=2,compile=1" \
  --steps 40 --warmup 10 --json $OUT/throughput.json > $OUT/throughput.txt 2>&1
tail -7 $OUT/throughput.txt
echo "throughput done at $SECONDS s"
AHEAD=$(python3 -c "
import json; r = {x['variant']: x.get('samples_per_s', 0) for x in json.load(open('$OUT/throughput.json'))['results']}
print(2 if r.get('batch_size=128,ahead=2', 0) > 0 else 0)" || echo 0)
COMPILE=$(python3 -c "
import json; r = {x['variant']: x.get('samples_per_s', 0) for x in json.load(open('$OUT/throughput.json'))['results']}
print(int(r.get('batch_size=128,ahead=2,compile=1', 0) > 1.1 * r.get('batch_size=128,ahead=2', 0)))" || echo 0)
MINUTES=$(python3 -c "print(round((545 - $SECONDS) / 60 - 0.8, 2))")
echo "ahead=$AHEAD compile=$COMPILE minutes=$MINUTES"
RUN=runs/h bash training/device.sh $MINUTES --init-onnx src/facevox/models/vrn-hg2-w192.onnx \
  --real-labels cache/labels --real-photos cache --real-fraction 0.3 --landmarks ict-nose-bridge \
  --batch-size 128 --lr 2e-4 --warmup-steps 100 --total-steps 12000 --decay-steps 11000 --seed 7 \
  --volume-weight 10 --surface-weight 0.02 --compile $COMPILE --ahead $AHEAD --eval-every 1000 | grep -v '"step": [0-9]*[1-9]50,' | tail -25
echo "end at $SECONDS s"
