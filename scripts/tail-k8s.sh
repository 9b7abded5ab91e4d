#!/usr/bin/env bash
# Follows the logs of the demo Job's pod (the seed's tail script): waits for the pod to start,
# then streams its log until it ends. The executor's last line is the result document.
#   scripts/tail-k8s.sh [JOB]                 default: the name in k8s/job.yaml (wasm-executor-job)
# Settings: KUBECTL (default kubectl), JOB_TEMPLATE (default k8s/job.yaml), WAIT_SEC (default 120,
# to wait for the pod to start).
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a kubectl <<<"${KUBECTL:-kubectl}"
# The name in the manifest, read offline (`set env --local` prints only when it changed something).
job=${1:-$("${kubectl[@]}" set env --local -f "${JOB_TEMPLATE:-k8s/job.yaml}" TAIL_K8S=1 -o 'jsonpath={.metadata.name}')}
wait_sec=${WAIT_SEC:-120}

deadline=$((SECONDS + wait_sec))
while :; do
  phase=$("${kubectl[@]}" get pods -l "job-name=$job" -o 'jsonpath={.items[0].status.phase}' 2>/dev/null || true)
  case "$phase" in
    Running | Succeeded | Failed) break ;;
  esac
  if ((SECONDS >= deadline)); then
    echo "tail-k8s: no started pod for job/$job after ${wait_sec}s (phase \"$phase\"):" >&2
    "${kubectl[@]}" get pods -l "job-name=$job" -o wide >&2 || true
    "${kubectl[@]}" describe job "$job" >&2 || true
    exit 1
  fi
  sleep 1
done
exec "${kubectl[@]}" logs -f "job/$job" --all-containers
