//! Hostile exports for the sandbox tests: each one misbehaves in one way.

use std::hint::black_box;

/// Never returns: only a wall-clock limit or fuel can stop it.
#[unsafe(no_mangle)]
pub extern "C" fn spin() -> u64 {
    let mut i: u64 = 0;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

/// Allocates and touches 1 MiB chunks forever: only a memory limit can stop it.
#[unsafe(no_mangle)]
pub extern "C" fn membomb() -> u64 {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        kept.push(black_box(vec![1u8; 1 << 20]));
    }
}

/// Recurses without bound (not a tail call): only a stack limit can stop it.
#[allow(unconditional_recursion)]
#[unsafe(no_mangle)]
pub extern "C" fn recurse(depth: u64) -> u64 {
    let mut frame = [depth; 16];
    black_box(&mut frame);
    recurse(black_box(depth + 1)).wrapping_add(frame[3])
}

/// Traps with `unreachable`.
#[unsafe(no_mangle)]
pub extern "C" fn trap() -> u64 {
    core::arch::wasm32::unreachable()
}

/// Integer division: traps when `b` is zero.
#[unsafe(no_mangle)]
pub extern "C" fn divide(a: i64, b: i64) -> i64 {
    black_box(a) / black_box(b)
}

/// Grows linear memory by `pages` 64 KiB pages at once; returns the old size or -1.
#[unsafe(no_mangle)]
pub extern "C" fn grow(pages: i32) -> i32 {
    core::arch::wasm32::memory_grow(0, pages as usize) as i32
}
