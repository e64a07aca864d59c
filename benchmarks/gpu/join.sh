#!/usr/bin/env bash
# Here: rebuild a teacher checkpoint from the files pack.sh returned (meta.tar and model.partNN, in one folder),
# checking the sha256 taken on the device. Then `rdistill teacher infer` on this machine writes its signals.
#   bash benchmarks/gpu/join.sh /tmp/returned artifacts/bench-teacher-text/amazon-scientific/teacher/checkpoint
set -euo pipefail
FROM=$1 DEST=$2
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
tar xf "$FROM/meta.tar" -C "$DEST.tmp"
cat "$FROM"/model.part* > "$DEST.tmp/model.safetensors"
test "$(sha256sum "$DEST.tmp/model.safetensors" | cut -c1-64)" = "$(cat "$DEST.tmp/model.sha256")" \
  || { echo "join.sh: model.safetensors does not match the device's sha256 (a part missing?)" >&2; exit 1; }
rm "$DEST.tmp/model.sha256"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
echo "checkpoint ready in $DEST"
