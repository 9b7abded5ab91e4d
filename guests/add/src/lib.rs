//! `add(x, y)`: the seed's fallback entry, over u64 with wrapping arithmetic.
#![no_std]

/// Returns `x + y`, wrapping at 2^64.
#[unsafe(no_mangle)]
pub extern "C" fn add(x: u64, y: u64) -> u64 {
    x.wrapping_add(y)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
