#!/usr/bin/env bash
# Build (or bring up to date) the virtualenv from the hashed lock: every attendee, CI run and
# image installs the same bytes. `make venv` runs this when a lock file or pyproject.toml changed.
#   make/venv.sh PYTHON VENV LOCK
# With uv (on PATH, or installed into the venv at its pinned version) it takes seconds; where
# uv cannot be had, pip installs the same lock (slower). Either way --require-hashes: a file
# whose hash is not in the lock is refused. The lock holds every package, so it is installed as it is
# (--no-deps): a package's own pins are not resolved again (network-config-analyzer pins an older PyYAML
# than the lock's, which make lock overrides: requirements-dev-overrides.txt).
set -euo pipefail

python=${1:?usage: make/venv.sh PYTHON VENV LOCK}
venv=${2:?usage: make/venv.sh PYTHON VENV LOCK}
lock=${3:?usage: make/venv.sh PYTHON VENV LOCK}
uv_version=0.13.9  # the uv that wrote the lock files (make lock)

command -v "$python" >/dev/null 2>&1 || { echo "error: $python not found: install Python 3.11 or set PYTHON_BIN" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "error: $python is Python $("$python" -c 'import platform; print(platform.python_version())'), the lock is for 3.11: set PYTHON_BIN=python3.11" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"

uv=$(command -v uv 2>/dev/null || true)
if [ -z "$uv" ] && [ ! -x "$venv/bin/uv" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$uv_version" 2>/dev/null || true
fi
[ -n "$uv" ] || { [ -x "$venv/bin/uv" ] && uv="$venv/bin/uv"; } || true

# Every module is compiled once, here (uv: --compile-bytecode, the whole site-packages; pip: compileall). A
# Python run with PYTHONDONTWRITEBYTECODE=1 (set on many machines, and in the image) never writes a .pyc, so
# without them every process that imports TensorFlow compiles its thousands of modules again: measured,
# 11 s of CPU per `import tensorflow` without, 4 s with them.
if [ -n "$uv" ]; then
  echo "installing $lock with uv into $venv"
  "$uv" pip install --quiet --python "$venv/bin/python" --require-hashes --no-deps --compile-bytecode -r "$lock"
  "$uv" pip install --quiet --python "$venv/bin/python" --no-deps --no-build-isolation --editable .
else
  echo "installing $lock with pip into $venv (uv could not be had)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$lock"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --editable .
  "$venv/bin/python" -m compileall -q -j 0 "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null
fi
