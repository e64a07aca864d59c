# device call 1: install the carried wheels and Ray (stripped of jars/rllib/dashboard UI) into /tmp/site
set -e
mkdir -p /tmp/site /tmp/stage
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 - <<'PY'
import os, zipfile
z = zipfile.ZipFile('.gpu/ray.zip')
for info in z.infolist():
    path = z.extract(info, '/tmp/site')
    mode = info.external_attr >> 16
    if mode and not info.is_dir():
        os.chmod(path, mode)
PY
# DeepSpeed ships as a source archive only (stage.sh fetches the version installed here); its ops are left unbuilt
rm -rf /tmp/stage/ds && mkdir -p /tmp/stage/ds && tar xzf .whl/deepspeed-*.tar.gz -C /tmp/stage/ds
(cd /tmp/stage/ds/deepspeed-* && DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . 2>&1 | tail -3)
cp -r .gpu/model /tmp/stage/model
export PYTHONPATH=/tmp/site
python3 --version; nvidia-smi -L
python3 -c "import ray, deepspeed, pydantic, torch, transformers; print('ray', ray.__version__, 'ds', deepspeed.__version__, 'torch', torch.__version__, torch.cuda.is_available(), 'tf', transformers.__version__)"
RAY_AUTH_MODE=disabled python3 -c "import ray; ray.init(include_dashboard=False); print(ray.cluster_resources())"
