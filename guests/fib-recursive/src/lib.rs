//! Naive recursive Fibonacci: a call-heavy benchmark, built both to Wasm and natively.

/// fib(n) by the exponential recursion, over u64 with wrapping arithmetic.
#[unsafe(no_mangle)]
pub extern "C" fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1).wrapping_add(fib(n - 2))
    }
}
