//! JSON arguments to Wasm values (`wasm_exec_runtime::convert`), by parameter type, and back.

use serde_json::Value;
use wasm_exec_runtime::convert::{from_val, to_val};
use wasmtime::{Val, ValType};

/// The first byte picks the parameter type, the rest is the JSON argument. Checks: no panic; a
/// value that converts renders as JSON that converts back to the same bits (any NaN to a NaN).
pub fn convert(data: &[u8]) {
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    let types = [ValType::I32, ValType::I64, ValType::F32, ValType::F64];
    let ty = &types[usize::from(pick) % types.len()];
    let Ok(value) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    let Ok(val) = to_val(&value, ty) else {
        return;
    };
    let rendered = from_val(&val);
    let back = to_val(&rendered, ty)
        .unwrap_or_else(|e| panic!("{value} gave {rendered}, which does not convert back: {e}"));
    assert_eq!(bits(&back), bits(&val), "{value} -> {rendered}");
}

/// A value's bits, every NaN as one, for comparing.
fn bits(val: &Val) -> Option<u64> {
    match *val {
        Val::I32(n) => Some(u64::from(n as u32)),
        Val::I64(n) => Some(n as u64),
        Val::F32(b) if f32::from_bits(b).is_nan() => Some(u64::MAX),
        Val::F32(b) => Some(u64::from(b)),
        Val::F64(b) if f64::from_bits(b).is_nan() => Some(u64::MAX),
        Val::F64(b) => Some(b),
        _ => None,
    }
}
