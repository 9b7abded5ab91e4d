module wasm-exec.invalid/guests/go-fib

go 1.27
