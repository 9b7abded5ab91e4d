# Entry points; each target is a thin wrapper over a script or cargo command documented in README.md.
.PHONY: run run-executor test guests bench-executor bench-coordinator

## The main job: the coordinator runs the sample tasks on the local backend and prints a table.
run:
	cargo run --release -p coordinator -- --once

## One task the way a Kubernetes Job runs it: the executor on the fib sample.
run-executor:
	cargo run --release -p executor -- --wasm-path host/wasm/fib.wasm \
		--args-json '{"entry":"fib","args":[12]}' --output-path host/shared/result.json

## The whole test suite (installs what it needs).
test:
	scripts/test

## Rebuilds the guest modules into host/wasm and testdata/wasm.
guests:
	scripts/build-guests

## Executor start-up and speed against the wasmtime CLI and native code (docs/PERFORMANCE.md).
bench-executor:
	scripts/bench-executor

## Coordinator throughput, overhead and memory over its HTTP API (docs/PERFORMANCE.md).
bench-coordinator:
	cargo bench -p coordinator --bench throughput
