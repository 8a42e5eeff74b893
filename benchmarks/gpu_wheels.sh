#!/usr/bin/env bash
# The wheels benchmarks/gpu_study.py needs on a GPU machine that has torch, transformers,
# accelerate, pandas, pyarrow and the like but not these (see ../shared/FACTS.md): downloaded
# here, at the versions installed in this environment, for CPython 3.12 on x86-64, into .whl/
# (git-ignored). On the GPU machine, install them before running the benchmark:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_study.py --samples 64 128
set -euo pipefail
cd "$(dirname "$0")/.."
NEEDED="llmcompressor compressed-tensors lm_eval loguru pydantic pydantic_core annotated-types typing-inspection
        datasets dill multiprocess chardet wcwidth pytz"
specs=()
for name in $NEEDED; do
  version=$(python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  specs+=("$name==$version")
done
rm -rf .whl && mkdir -p .whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${specs[@]}"
du -ch .whl/*.whl | tail -1
