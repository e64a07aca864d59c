# device: after run.sh, bring the trained checkpoint home in exact fp32 parts. A transfer returns at most 8 files of
# 16 MiB each (64 MiB together) and the checkpoint is about 99 MiB, so it takes two calls while the machine is warm:
#   bash .gpu/pack.sh <dataset> 0   -> $OUT: meta.tar (config, manifest, metrics, backbone files, sha256) + parts 0-3
#   bash .gpu/pack.sh <dataset> 4   -> $OUT: parts 4 onward
# then, here: bash benchmarks/gpu/join.sh <folder with every returned file> <artifact root>/teacher/checkpoint
set -e
CHECKPOINT=.gpu/work/$1/teacher/checkpoint
PARTS=/tmp/stage/parts-$1
if [ ! -d $PARTS ]; then
  test -s $CHECKPOINT/model.safetensors
  mkdir -p $PARTS
  split -b 15000000 -d -a 2 $CHECKPOINT/model.safetensors $PARTS/model.part
  sha256sum $CHECKPOINT/model.safetensors | cut -c1-64 > $PARTS/model.sha256
  tar cf $PARTS/meta.tar -C $CHECKPOINT --exclude model.safetensors . -C $PARTS model.sha256
fi
ls $PARTS
if [ "$2" = 0 ]; then cp $PARTS/meta.tar $OUT/; fi
for part in $(ls $PARTS | grep model.part | sort | tail -n +$(($2 + 1)) | head -4); do cp $PARTS/$part $OUT/; done
ls -la $OUT
