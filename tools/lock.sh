#!/usr/bin/env bash
# Regenerate the hash-pinned locks after editing third_party/python/requirements*.in.
#   tools/lock.sh          the CPU lock (torch's CPU wheel from this machine's find-links)
#   tools/lock.sh gpu      the GPU lock (PyPI's CUDA build of torch; ignores local pip config)
# Then run ./bazelw once: it rebuilds .venv because the lock's hash changed.
set -euo pipefail
cd "$(dirname "$0")/../third_party/python"
compile=(../../.venv/bin/pip-compile --generate-hashes --allow-unsafe --strip-extras
         --no-emit-index-url --no-emit-find-links)
if [ "${1:-cpu}" = gpu ]; then
  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${compile[@]}" -o requirements_gpu_lock.txt requirements_gpu.in
else
  "${compile[@]}" -o requirements_lock.txt requirements.in
fi
