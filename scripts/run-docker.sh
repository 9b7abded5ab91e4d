#!/usr/bin/env bash
# Runs one sample task in the executor image, hardened the way a Job runs it: the seed's local
# end-to-end check. The container's output passes through (its last line is the result document);
# the result file lands in host/shared/. Exits with the executor's exit code.
#   SCENARIO=fib scripts/run-docker.sh        add (default) | fib | affine
# Settings (environment):
#   CONTAINER_ENGINE  docker (default) or podman
#   SKIP_BUILD=1      use the image as it is instead of building it first (scripts/build-image)
#   IMAGE             executor image (default executor-demo/executor:demo)
#   WASM, INPUT       another module / input document than the scenario's (paths on this machine)
#   ENTRY, ADD_X, ADD_Y, TIMEOUT_SEC, FUEL   passed to the executor when set
#   MEMORY            container memory limit (default 512m, the Job's limit)
#   MAX_MEMORY_MB     the guest's memory limit (default 256); must leave room under MEMORY for the
#                     executor itself, so that a greedy guest ends as out_of_memory instead of the
#                     kernel killing the container
#   RESULT_FILE       name of the result file in host/shared (default result.txt)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
absolute() { if [[ $1 = /* ]]; then echo "$1"; else echo "$2/$1"; fi; }
# WASM and INPUT are relative to where the script is called from, the samples to the repository.
[ -z "${WASM:-}" ] || WASM=$(absolute "$WASM" "$PWD")
[ -z "${INPUT:-}" ] || INPUT=$(absolute "$INPUT" "$PWD")
cd "$root"

scenario=${SCENARIO:-add}
engine=${CONTAINER_ENGINE:-docker}
image=${IMAGE:-executor-demo/executor:demo}
memory=${MEMORY:-512m}
max_memory_mb=${MAX_MEMORY_MB:-256}
result_file=${RESULT_FILE:-result.txt}

case "$scenario" in
  add) wasm=$root/host/wasm/add.wasm input="" ;; # the executor's add(ADD_X, ADD_Y) fallback: 5 + 7
  fib) wasm=$root/host/wasm/fib.wasm input=$root/testdata/input/fib.json ;;
  affine) wasm=$root/host/wasm/affine.wasm input=$root/testdata/input/affine.json ;;
  *) echo "run-docker: SCENARIO must be add, fib or affine, got \"$scenario\"" >&2; exit 2 ;;
esac
wasm=${WASM:-$wasm}
input=${INPUT:-$input}
for file in "$wasm" ${input:+"$input"}; do
  [ -f "$file" ] || { echo "run-docker: no such file: $file" >&2; exit 2; }
done

# The memory limit in MiB (accepts 512m, 1g, 300M, or bytes) against MAX_MEMORY_MB.
case "${memory,,}" in
  *g) limit_mb=$((${memory%[gG]} * 1024)) ;;
  *m) limit_mb=${memory%[mM]} ;;
  *k) limit_mb=$((${memory%[kK]} / 1024)) ;;
  *) limit_mb=$((memory / 1048576)) ;;
esac
headroom_mb=64
if ((max_memory_mb + headroom_mb > limit_mb)); then
  echo "run-docker: MAX_MEMORY_MB=$max_memory_mb leaves less than ${headroom_mb} MiB for the executor under MEMORY=$memory; lower MAX_MEMORY_MB or raise MEMORY" >&2
  exit 2
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  image=$(CONTAINER_ENGINE=$engine IMAGE=$image scripts/build-image executor)
fi

# The result volume: writable by the container's non-root uid whoever runs this script.
mkdir -p host/shared
chmod 0777 host/shared 2>/dev/null ||
  echo "run-docker: could not chmod host/shared; uid 65532 must be able to write there" >&2
rm -f "host/shared/$result_file"

args=(
  run --rm
  --read-only --network none
  --user 65532:65532
  --memory "$memory" --memory-swap "$memory"
  --cap-drop ALL --security-opt no-new-privileges
  -v "$wasm:/mnt/wasm/module.wasm:ro"
  -v "$root/host/shared:/mnt/shared"
  -e WASM_PATH=/mnt/wasm/module.wasm
  -e "OUTPUT_PATH=/mnt/shared/$result_file"
  -e "MAX_MEMORY_MB=$max_memory_mb"
)
if [ -n "$input" ]; then
  args+=(-v "$input:/mnt/input/input.json:ro" -e INPUT_PATH=/mnt/input/input.json)
fi
for name in ENTRY ADD_X ADD_Y TIMEOUT_SEC FUEL; do
  [ -z "${!name:-}" ] || args+=(-e "$name=${!name}")
done

echo "run-docker: $scenario: ${wasm#"$root"/}${input:+ with ${input#"$root"/}} in $image ($engine, --memory $memory)" >&2
code=0
"$engine" "${args[@]}" "$image" || code=$?
echo "run-docker: exit $code; result file host/shared/$result_file" >&2
exit "$code"
