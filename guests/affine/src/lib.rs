//! `affine(a, b, x) = a * x + b`: the seed's affine (linear congruence) example.
#![no_std]

/// Returns `a * x + b` over u64, wrapping at 2^64, so `affine(13, 9, 2) = 35`.
#[unsafe(no_mangle)]
pub extern "C" fn affine(a: u64, b: u64, x: u64) -> u64 {
    a.wrapping_mul(x).wrapping_add(b)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
