//! Hostile guests generated as WAT text: shapes too large to commit as files, built to make the
//! compiler work as hard as the module shape check allows.

use std::fmt::Write;

/// A function with `locals` i64 locals in a loop around `depth` nested blocks: each block bumps
/// one local and may branch back to the loop, so every local is live across every block, the
/// shape that makes the compiler's cost grow fastest.
pub fn looped_function(locals: usize, depth: usize) -> String {
    let mut wat = String::from("(func (param $p i32) (result i64)");
    for _ in 0..locals {
        wat.push_str(" (local i64)");
    }
    wat.push_str(" (loop $l\n");
    for d in 0..depth {
        if locals == 0 {
            wat.push_str(" (block local.get 0 br_if $l\n");
        } else {
            let k = 1 + d % locals;
            let _ = writeln!(
                wat,
                " (block local.get {k} i64.const 1 i64.add local.set {k} local.get 0 br_if $l"
            );
        }
    }
    wat.push_str(&")".repeat(depth));
    wat.push_str(") i64.const 0");
    for i in 0..locals {
        let _ = write!(wat, " local.get {} i64.add", i + 1);
    }
    wat.push(')');
    wat
}

/// A module of these functions, the first exported as `run`.
pub fn module(functions: &[String]) -> String {
    let mut wat = String::from("(module (export \"run\" (func 0))");
    for f in functions {
        wat.push_str(f);
    }
    wat.push(')');
    wat
}

/// The costliest module the shape check lets through, near enough: `functions` copies of the
/// costliest function allowed (100 locals live across 1,999 nested blocks), about a second of
/// compiling each.
pub fn slow_to_compile(functions: usize) -> String {
    module(&vec![looped_function(100, 1_999); functions])
}
