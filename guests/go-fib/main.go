// A WASI reactor built by the Go toolchain: two exported functions, fib and fib_json, over the
// Go runtime (garbage collector, scheduler), fmt and encoding/json (reflection), as real Go
// guests are. Built by scripts/build-guests:
//
//	GOOS=wasip1 GOARCH=wasm go build -trimpath -buildvcs=false -buildmode=c-shared -o go_fib.wasm .
package main

import (
	"encoding/json"
	"fmt"
)

// fib returns the n-th Fibonacci number with wrapping uint64 arithmetic: fib(12) = 144.
//
//go:wasmexport fib
func fib(n uint64) uint64 {
	a, b := uint64(0), uint64(1)
	for i := uint64(0); i < n; i++ {
		a, b = b, a+b
	}
	return a
}

// fibJSON prints {"n":n,"fib":value} on stdout and returns the number of bytes written.
//
//go:wasmexport fib_json
func fibJSON(n uint64) int32 {
	line, err := json.Marshal(struct {
		N   uint64 `json:"n"`
		Fib uint64 `json:"fib"`
	}{n, fib(n)})
	if err != nil {
		return -1
	}
	written, _ := fmt.Println(string(line))
	return int32(written)
}

// main is not run in a reactor (-buildmode=c-shared): the host calls _initialize, then exports.
func main() {}
