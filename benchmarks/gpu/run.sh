# device: the GPU text-mode teacher benchmark for one dataset ($1), 64 samples per optimizer step as on CPU
# (1 worker x 64 here, 2 workers x 32 there); the result lands in $OUT/teacher-gpu.json
set -e
if [ ! -s /tmp/stage/model/model.safetensors ]; then
  cat /tmp/stage/st.aa .gpu/m2/st.ab > /tmp/stage/model/model.safetensors
fi
test "$(sha256sum /tmp/stage/model/model.safetensors | cut -c1-64)" = "$(cat /tmp/stage/model/sha)" && echo model ok
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
set +e
timeout $2 python3 benchmarks/teacher.py quality --workers 1 --batch-size 64 --work-dir .gpu/work --out $OUT/teacher-gpu.json \
  --dataset $1 --mode text --name gpu teacher.use_gpu=true teacher.model=/tmp/stage/model teacher.cpus_per_worker=4 "${@:3}" \
  > $OUT/text-$1.log 2>&1
echo text-$1 rc=$?
grep -o "metrics={[^}]*}" $OUT/text-$1.log | sort -u | cut -c1-400
cat $OUT/teacher-gpu.json 2>/dev/null | head -c 2500
