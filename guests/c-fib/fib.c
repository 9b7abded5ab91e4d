/* A WASI reactor built by zig cc against wasi-libc: fib(n) and fib_print(n), which prints
 * "fib(n) = value" through printf. Built by scripts/build-guests:
 *
 *   zig cc -target wasm32-wasi -mexec-model=reactor -O2 -g0 -o c_fib.wasm fib.c
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>

/* The n-th Fibonacci number with wrapping uint64 arithmetic: fib(12) = 144. */
__attribute__((export_name("fib"))) uint64_t fib(uint64_t n) {
    uint64_t a = 0, b = 1;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t next = a + b;
        a = b;
        b = next;
    }
    return a;
}

/* Prints "fib(n) = value" on stdout and returns the number of bytes written (negative on error). */
__attribute__((export_name("fib_print"))) int32_t fib_print(uint64_t n) {
    int written = printf("fib(%" PRIu64 ") = %" PRIu64 "\n", n, fib(n));
    fflush(stdout);
    return written;
}
