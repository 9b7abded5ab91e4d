//! `fib(n)`: the n-th Fibonacci number, fib(0) = 0, fib(1) = 1, fib(12) = 144.
#![no_std]

/// Iterative Fibonacci over u64 with wrapping arithmetic, so any `n` ends in O(n) steps.
#[unsafe(no_mangle)]
pub extern "C" fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.wrapping_add(b));
    }
    a
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
