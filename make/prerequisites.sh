#!/usr/bin/env bash
# `make prerequisites`: the tools of the day, each with its version against the minimum docs/before-the-day.md
# gives, one line each; a missing or too old one says what to install. Runs before `make venv` (no Python of
# ours needed), so it is plain bash.
#   make/prerequisites.sh PYTHON_BIN VENV MAKE_VERSION IMAGE
# Exit 1 if something required is missing or too old: Part 1 needs Python 3.11, GNU make and git; Part 2
# kubectl, and docker or (without it) gcloud to build in the cloud; gcloud too when IMAGE is on Artifact
# Registry (gcloud logs Docker in to it).
set -uo pipefail

python_bin=${1:?usage: make/prerequisites.sh PYTHON_BIN VENV MAKE_VERSION IMAGE}
venv=${2:?usage: make/prerequisites.sh PYTHON_BIN VENV MAKE_VERSION IMAGE}
make_version=${3:-}
image=${4:-}
problems=0

ok() { printf '%-9s %s\n' ok "$*"; }
note() { printf '%-9s %s\n' - "$*"; }
problem() { printf '%-9s %s\n' "$1" "${*:2}"; problems=$((problems + 1)); }

# version_at_least 1.30.2 1.30: each dotted number compared in turn, missing ones as 0.
version_at_least() {
  local -a have want
  local i
  IFS=. read -r -a have <<< "$1"
  IFS=. read -r -a want <<< "$2"
  for i in 0 1 2; do
    local h=${have[i]:-0} w=${want[i]:-0}
    h=${h%%[!0-9]*} w=${w%%[!0-9]*}
    h=${h:-0} w=${w:-0}
    if ((10#$h > 10#$w)); then return 0; fi
    if ((10#$h < 10#$w)); then return 1; fi
  done
  return 0
}

python_version() { "$1" -c 'import platform; print(platform.python_version())' 2>/dev/null; }

# ---------------------------------------------------------------- Part 1
get_python="uv python install 3.11, then make venv PYTHON_BIN=\"\$(uv python find 3.11)\" (docs/before-the-day.md)"
if [ -x "$venv/bin/python" ] && [[ $(python_version "$venv/bin/python") == 3.11.* ]]; then
  ok "python $(python_version "$venv/bin/python") ($venv: 3.11 needed)"
elif command -v "$python_bin" >/dev/null 2>&1 && [[ $(python_version "$python_bin") == 3.11.* ]]; then
  ok "python $(python_version "$python_bin") ($python_bin: 3.11 needed)"
elif command -v python3.11 >/dev/null 2>&1 && [[ $(python_version python3.11) == 3.11.* ]]; then
  ok "python $(python_version python3.11) (python3.11; $python_bin is not 3.11: the first make venv needs PYTHON_BIN=python3.11)"
elif command -v uv >/dev/null 2>&1 && found=$(uv python find 3.11 2>/dev/null) && [ -n "$found" ]; then
  ok "python $(python_version "$found") ($found, uv's: the first make venv needs PYTHON_BIN=\"\$(uv python find 3.11)\")"
elif command -v "$python_bin" >/dev/null 2>&1; then
  problem "too old" "python: $python_bin is Python $(python_version "$python_bin"), the lock needs exactly 3.11: $get_python"
else
  problem missing "python: no Python 3.11 ($python_bin not found): $get_python"
fi

if [ -z "$make_version" ]; then
  problem missing "make: GNU make 3.82 or newer is needed (apt-get install make; macOS: xcode-select --install)"
elif version_at_least "$make_version" 3.82; then
  ok "make $make_version (GNU make 3.82 or newer needed)"
else
  problem "too old" "make $make_version: GNU make 3.82 or newer is needed (apt-get install make; brew install make, then gmake)"
fi

if command -v git >/dev/null 2>&1; then
  ok "git $(git --version 2>/dev/null | sed -n 's/^git version //p' | head -n 1) (any version)"
else
  problem missing "git: install it (apt-get install git; macOS: xcode-select --install)"
fi

# ---------------------------------------------------------------- Part 2 (the cluster)
if command -v kubectl >/dev/null 2>&1; then
  kubectl_version=$(kubectl version --client --output json 2>/dev/null \
    | sed -n 's/.*"gitVersion": *"v\([0-9][0-9.]*\).*/\1/p' | head -n 1)
  if [ -z "$kubectl_version" ]; then
    problem "unknown" "kubectl: 'kubectl version --client' named no version: install kubectl 1.30 or newer (https://kubernetes.io/docs/tasks/tools/)"
  elif version_at_least "$kubectl_version" 1.30; then
    ok "kubectl $kubectl_version (Part 2: 1.30 or newer needed)"
  else
    problem "too old" "kubectl $kubectl_version: Part 2 needs kubectl 1.30 or newer (https://kubernetes.io/docs/tasks/tools/)"
  fi
else
  problem missing "kubectl: Part 2 needs kubectl 1.30 or newer (https://kubernetes.io/docs/tasks/tools/)"
fi

# docker builds the image here; without it, gcloud builds it in the cloud (make build-remote).
have_gcloud=$(command -v gcloud >/dev/null 2>&1 && echo yes || true)
docker_builds=
if command -v docker >/dev/null 2>&1; then
  if docker_version=$(docker version --format '{{.Server.Version}}' 2>/dev/null) && [ -n "$docker_version" ]; then
    if version_at_least "$docker_version" 23; then
      ok "docker $docker_version (Part 2: Docker Engine 23 or newer, for BuildKit)"
      docker_builds=yes
    elif [ -n "$have_gcloud" ]; then
      note "docker $docker_version is older than 23 (no BuildKit by default): build in the cloud instead, make build-remote"
    else
      problem "too old" "docker $docker_version: Part 2 needs Docker Engine 23 or newer (https://docs.docker.com/get-docker/), or gcloud to build in the cloud (make build-remote)"
    fi
  elif [ -n "$have_gcloud" ]; then
    note "docker: its daemon does not answer (start Docker Desktop or the docker service), or build in the cloud: make build-remote"
  else
    problem "no daemon" "docker: its daemon does not answer: start Docker Desktop or the docker service (or install gcloud and build in the cloud: make build-remote)"
  fi
elif [ -n "$have_gcloud" ]; then
  note "docker: not installed; gcloud builds the image in the cloud instead (make build-remote)"
else
  problem missing "docker: Part 2 builds the image with Docker 23 or newer (https://docs.docker.com/get-docker/), or without it in the cloud with gcloud (https://cloud.google.com/sdk/docs/install)"
fi

case "$image" in
  *-docker.pkg.dev/*|gcr.io/*|*.gcr.io/*) registry="IMAGE $image is on Artifact Registry: gcloud logs Docker in to it";;
  *) registry=;;
esac
if [ -n "$have_gcloud" ]; then
  ok "gcloud $(gcloud --version 2>/dev/null | sed -n 's/^Google Cloud SDK //p' | head -n 1) (any version)"
elif [ -n "$registry" ]; then
  problem missing "gcloud: $registry (https://cloud.google.com/sdk/docs/install)"
elif [ -n "$docker_builds" ]; then
  note "gcloud: not needed (docker builds the image; IMAGE ${image:-(unset)} is not on Artifact Registry)"
fi

if [ "$problems" -gt 0 ]; then
  echo "error: $problems prerequisite(s) missing or too old (above): install them, then make prerequisites again" >&2
  exit 1
fi
echo "every prerequisite found (Part 1 and Part 2)"
