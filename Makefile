# Entry points; each target is a thin wrapper over a script or cargo command documented in README.md.
.PHONY: run test guests bench-executor

## Runs the executor on the fib sample and prints its result document.
run:
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
