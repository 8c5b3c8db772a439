#!/bin/bash
# The attendee's cluster steps that are more than one command (a loop, a port-forward held while
# something else runs), for make/cluster.mk:
#
#   make/cluster.sh check-cluster NAMESPACE
#   make/cluster.sh push IMAGE:TAG RECORD                                 # docker push, its digest to RECORD
#   make/cluster.sh with-port-forward NAMESPACE SERVICE PORT COMMAND...   # COMMAND runs while the Service's PORT
#       # is forwarded to a free local port that kubectl picks, given to COMMAND as $FORWARDED_PORT
#       # (SERVICE may be KIND/NAME, e.g. deployment/jupyterlab; PORT may be LOCAL:PORT, a local port you chose)
#   make/cluster.sh jupyter NAMESPACE [LOCAL_PORT]                       # JupyterLab's port forwarded, its URL
#   make/cluster.sh jupyter-token < LOG                                   # the token JupyterLab printed in LOG
#   make/cluster.sh logs NAMESPACE TFJOB                                  # waits for its chief, follows its log
#   make/cluster.sh retrain-now NAMESPACE                                 # a Job from the CronJob, its log
#   make/cluster.sh batch-predict NAMESPACE OUTPUT                        # waits for the Job, copies its CSV
#   make/cluster.sh clean-katib NAMESPACE                                 # the Katib Experiments, if Katib is there
#   make/cluster.sh model-config NAMESPACE CONFIGMAP PYTHON ACTION [FLAGS...]
#       # the live model config through src/model_config.py ACTION, then wait until serving
#       # (its REST port forwarded; a FLAG `--server forwarded` becomes that address) serves it
#
# Each prints the kubectl commands it runs; a failure is one line on stderr and a non-zero exit.
set -euo pipefail

die() { echo "error: $*" >&2; exit 1; }
run() { echo "$*"; "$@"; }  # show a command, then run it

check_cluster() {
  local namespace=$1 context ns
  command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed: see https://kubernetes.io/docs/tasks/tools/"
  context=$(kubectl config current-context 2>/dev/null) \
    || die "kubectl has no current context: export KUBECONFIG=<the kubeconfig file you were given>"
  ns=$(kubectl config view --minify --output 'jsonpath={..namespace}' 2>/dev/null || true)
  if [ -n "$ns" ] && [ "$ns" != "$namespace" ]; then
    die "kubectl context $context works in namespace $ns but NAMESPACE is $namespace: export NAMESPACE=$ns"
  fi
  echo "cluster: context $context, namespace $namespace"
}

push() {
  local ref=$1 record=$2 out digest
  command -v docker >/dev/null 2>&1 || die "docker is not installed: see https://docs.docker.com/get-docker/"
  out=$(mktemp)
  echo "docker push $ref"
  # docker push ends with "<tag>: digest: sha256:<64 hex> size: N": the digest the registry stored.
  if ! docker push "$ref" | tee "$out"; then rm -f "$out"; die "docker push $ref failed (logged in? gcloud auth configure-docker REGISTRY-HOST)"; fi
  digest=$(grep -oE 'digest: sha256:[0-9a-f]{64}' "$out" | tail -n 1 | cut -d' ' -f2 || true)
  rm -f "$out"
  [ -n "$digest" ] || die "docker push $ref printed no digest: nothing recorded in $record"
  mkdir -p "$(dirname "$record")"
  echo "$ref@$digest" > "$record.tmp" && mv "$record.tmp" "$record"
  echo "pushed $ref@$digest (recorded in $record: every object you apply runs this digest)"
}

forward_pid=
forward_dir=
stop_forward() {
  if [ -n "$forward_pid" ]; then kill "$forward_pid" 2>/dev/null || true; wait "$forward_pid" 2>/dev/null || true; fi
  if [ -n "$forward_dir" ]; then rm -rf "$forward_dir"; fi
}

# kubectl picks a free local port (`:PORT`) and says which: "Forwarding from 127.0.0.1:NNNNN -> PORT". A fixed
# local port could already be held by something else on this laptop (a `make serve-local` left running), and
# the command would then talk to that instead of the cluster; one given as LOCAL:PORT is refused by kubectl then.
with_port_forward() {
  local namespace=$1 target=$2 port=${3#*:} ports=$3 i local_port=
  shift 3
  [[ $target == */* ]] || target=service/$target
  [[ $ports == *:* ]] || ports=:$ports
  trap stop_forward EXIT
  trap 'stop_forward; exit 130' INT
  trap 'stop_forward; exit 143' TERM
  forward_dir=$(mktemp -d)
  # There before kubectl starts: the loop below may read them before the background job's redirections run.
  : >"$forward_dir/out"
  : >"$forward_dir/err"
  echo "kubectl --namespace $namespace port-forward $target $ports"
  kubectl --namespace "$namespace" port-forward "$target" "$ports" \
    >"$forward_dir/out" 2>"$forward_dir/err" </dev/null &
  forward_pid=$!
  for i in $(seq 300); do
    local_port=$(sed -nE "s/^Forwarding from 127\.0\.0\.1:([0-9]+) -> $port\$/\1/p" "$forward_dir/out" | head -n 1)
    [ -n "$local_port" ] && break
    if ! kill -0 "$forward_pid" 2>/dev/null; then
      die "kubectl port-forward $target $ports stopped: $(tr '\n' ' ' < "$forward_dir/err" | sed 's/ *$//')"
    fi
    [ "$i" -lt 300 ] || die "kubectl port-forward $target $ports named no local port in 30 s"
    sleep 0.1
  done
  echo "$target port $port forwarded to 127.0.0.1:$local_port"
  FORWARDED_PORT=$local_port "$@"
}

# JupyterLab prints the URL with its token when it starts ("http://127.0.0.1:8888/lab?token=HEX"); the last one
# is the running server's (`kubectl logs` shows the current container's log).
jupyter_token() {
  sed -nE 's|.*http://127\.0\.0\.1:[0-9]+/lab\?token=([0-9a-f]+).*|\1|p' | tail -n 1
}

# The attendee's JupyterLab (the Deployment jupyterlab the instructor created in the namespace): listening on the
# pod's loopback only, reached through a port-forward, opened with the token it printed.
jupyter() {
  local namespace=$1 local_port=${2:-} err token i
  if ! err=$(kubectl --namespace "$namespace" get deployment jupyterlab --output name 2>&1 >/dev/null); then
    case "$err" in
      *NotFound*|*"not found"*) die "no JupyterLab in namespace $namespace: the instructor installs it (ask for it)";;
      *) die "kubectl get deployment jupyterlab: $err";;
    esac
  fi
  run kubectl --namespace "$namespace" rollout status deployment/jupyterlab --timeout=10m
  for i in $(seq 60); do
    token=$(kubectl --namespace "$namespace" logs deployment/jupyterlab --container jupyterlab 2>/dev/null | jupyter_token) || token=
    [ -n "$token" ] && break
    [ "$i" -lt 60 ] || die "JupyterLab printed no token in a minute: kubectl --namespace $namespace logs deployment/jupyterlab"
    sleep 1
  done
  JUPYTER_TOKEN=$token with_port_forward "$namespace" deployment/jupyterlab "$local_port:8888" sh -c \
    'echo "JupyterLab: http://127.0.0.1:$FORWARDED_PORT/lab?token=$JUPYTER_TOKEN   (Ctrl-C to stop)"; while :; do sleep 3600; done'
}

logs() {
  local namespace=$1 tfjob=$2 i
  for i in $(seq 60); do
    kubectl --namespace "$namespace" get pod "$tfjob-chief-0" >/dev/null 2>&1 && break
    [ "$i" -lt 60 ] || die "no pod $tfjob-chief-0 after 2 minutes: kubectl describe tfjob $tfjob"
    sleep 2
  done
  run kubectl --namespace "$namespace" logs --follow --pod-running-timeout=10m "$tfjob-chief-0" -c tensorflow
}

retrain_now() {
  local namespace=$1 job
  job=mnist-retrain-manual-$(date +%s)
  run kubectl --namespace "$namespace" create job --from=cronjob/mnist-retrain "$job"
  run kubectl --namespace "$namespace" logs --follow --pod-running-timeout=10m "job/$job"
}

batch_predict() {
  local namespace=$1 output=$2 state i rows
  echo "waiting for job/mnist-batch-predict to finish (the image pull, then about a minute)"
  for i in $(seq 180); do
    state=$(kubectl --namespace "$namespace" get job mnist-batch-predict \
      --output 'jsonpath={.status.conditions[?(@.status=="True")].type}')
    case "$state" in *Complete*|*Failed*) break;; esac
    [ "$i" -lt 180 ] || die "job/mnist-batch-predict has not finished after 15 minutes: kubectl describe job mnist-batch-predict"
    sleep 5
  done
  kubectl --namespace "$namespace" logs job/mnist-batch-predict -c predict
  case "$state" in *Failed*) die "job/mnist-batch-predict failed: kubectl describe job mnist-batch-predict";; esac
  mkdir -p "$(dirname "$output")"
  kubectl --namespace "$namespace" logs job/mnist-batch-predict -c csv > "$output"
  rows=$(($(wc -l < "$output") - 1))
  echo "$output: $rows rows (path,digit,probability,error)"
}

clean_katib() {
  local namespace=$1
  # Only where Katib is installed: elsewhere kubectl would not know the kind.
  if kubectl api-resources --api-group kubeflow.org --output name 2>/dev/null | grep -qx experiments.kubeflow.org; then
    run kubectl --namespace "$namespace" delete experiments --selector app.kubernetes.io/part-of=mnist-workshop \
      --ignore-not-found
  fi
}

model_config() {
  local namespace=$1 configmap=$2 python=$3 server=http://127.0.0.1:${FORWARDED_PORT:?run behind with-port-forward} arg
  local -a flags=()
  shift 3
  for arg in "$@"; do [ "$arg" = forwarded ] && flags+=("$server") || flags+=("$arg"); done
  set -- "${flags[@]}"
  echo "kubectl --namespace $namespace get configmap $configmap --output yaml | $python src/model_config.py $* --configmap - | kubectl --namespace $namespace apply -f -"
  kubectl --namespace "$namespace" get configmap "$configmap" --output yaml \
    | "$python" src/model_config.py "$@" --configmap - | kubectl --namespace "$namespace" apply -f -
  # The pod sees the change after the kubelet's ConfigMap sync (up to a minute) and one poll of TF Serving.
  kubectl --namespace "$namespace" get configmap "$configmap" --output yaml \
    | "$python" src/model_config.py wait --configmap - --server "$server"
}

command=${1:-}
[ -n "$command" ] || die "usage: make/cluster.sh check-cluster|push|with-port-forward|jupyter|jupyter-token|logs|retrain-now|batch-predict|clean-katib|model-config ARGS..."
shift
case "$command" in
  check-cluster) check_cluster "$@";;
  push) push "$@";;
  with-port-forward) with_port_forward "$@";;
  jupyter) jupyter "$@";;
  jupyter-token) jupyter_token;;
  logs) logs "$@";;
  retrain-now) retrain_now "$@";;
  batch-predict) batch_predict "$@";;
  clean-katib) clean_katib "$@";;
  model-config) model_config "$@";;
  *) die "unknown step '$command' (make/cluster.sh: check-cluster, push, with-port-forward, jupyter, jupyter-token, logs, retrain-now, batch-predict, clean-katib, model-config)";;
esac
