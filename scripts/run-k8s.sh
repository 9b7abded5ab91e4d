#!/usr/bin/env bash
# Runs one sample task as the Job of k8s/job.yaml (the seed's demo Job, on host/ through hostPath)
# and prints the result document: the container's termination message, else its last log line.
#   SCENARIO=fib scripts/run-k8s.sh           add | fib (default) | affine
# Settings (environment):
#   KUBECTL        kubectl command (default kubectl; e.g. "kubectl --context kind-kind")
#   JOB_TEMPLATE   the Job manifest (default k8s/job.yaml)
#   IMAGE          executor image (default: the manifest's)
#   WAIT_SEC       how long to wait for the Job to finish (default 180)
#   RENDER_ONLY=1  print the Job that would be applied and stop (needs no cluster)
# Any earlier Job of the same name is deleted first. Exits 0 when the Job completed, 1 when it
# failed or did not finish in time.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=${SCENARIO:-fib}
read -r -a kubectl <<<"${KUBECTL:-kubectl}"
template=${JOB_TEMPLATE:-k8s/job.yaml}
wait_sec=${WAIT_SEC:-180}

case "$scenario" in
  add) env=(WASM_PATH=/mnt/wasm/add.wasm ARGS_JSON- ADD_X=5 ADD_Y=7) ;;
  fib) env=(WASM_PATH=/mnt/wasm/fib.wasm 'ARGS_JSON={"entry":"fib","args":[12]}') ;;
  affine) env=(WASM_PATH=/mnt/wasm/affine.wasm 'ARGS_JSON={"entry":"affine","args":[13,9,2]}') ;;
  *) echo "run-k8s: SCENARIO must be add, fib or affine, got \"$scenario\"" >&2; exit 2 ;;
esac
env+=(TERMINATION_MESSAGE_PATH=/dev/termination-log)
[ -f "$template" ] || { echo "run-k8s: no Job manifest at $template" >&2; exit 2; }

# The Job's name and its first container (the executor), read offline: `set env --local` prints
# the object only when it changed something, hence a real setting.
read -r name container < <("${kubectl[@]}" set env --local -f "$template" "${env[-1]}" \
  -o 'jsonpath={.metadata.name} {.spec.template.spec.containers[0].name}{"\n"}')
job=$("${kubectl[@]}" set env --local -f "$template" -c "$container" "${env[@]}" -o yaml)
if [ -n "${IMAGE:-}" ]; then
  job=$("${kubectl[@]}" set image --local -f - "$container=$IMAGE" -o yaml <<<"$job")
fi
if [ "${RENDER_ONLY:-0}" = 1 ]; then
  echo "$job"
  exit 0
fi
echo "run-k8s: $scenario as job/$name" >&2
"${kubectl[@]}" delete job "$name" --ignore-not-found --wait=true >&2
"${kubectl[@]}" apply -f - <<<"$job" >&2

# Complete or Failed, whichever comes first (`kubectl wait` takes one condition only).
deadline=$((SECONDS + wait_sec))
state=""
while [ -z "$state" ]; do
  conditions=$("${kubectl[@]}" get job "$name" -o 'jsonpath={range .status.conditions[?(@.status=="True")]}{.type} {end}')
  case " $conditions " in
    *" Complete "*) state=Complete ;;
    *" Failed "*) state=Failed ;;
  esac
  if [ -z "$state" ]; then
    if ((SECONDS >= deadline)); then
      echo "run-k8s: job/$name did not finish in ${wait_sec}s; its pods:" >&2
      "${kubectl[@]}" get pods -l "job-name=$name" -o wide >&2
      exit 1
    fi
    sleep 1
  fi
done

message=$("${kubectl[@]}" get pods -l "job-name=$name" \
  -o 'jsonpath={.items[0].status.containerStatuses[0].state.terminated.message}')
if [ -n "$message" ]; then
  echo "run-k8s: job/$name $state; result from the termination message:" >&2
  echo "$message"
else
  echo "run-k8s: job/$name $state; result from the last log line:" >&2
  "${kubectl[@]}" logs "job/$name" --tail=1
fi
[ "$state" = Complete ]
