//! JSON arguments to Wasm values by the export's parameter types, and Wasm results back to JSON.
//!
//! Integers: a parameter accepts both the signed and the unsigned spelling of the same bits
//! (`-1` and `18446744073709551615` are the same i64), as a JSON number or a decimal string; any
//! value outside both ranges, or with a fraction, is refused, never truncated. Results are
//! rendered signed. Floats: JSON numbers, or the strings `"NaN"`, `"Infinity"`, `"-Infinity"`,
//! which is also how non-finite results are rendered, so the document stays valid JSON.

use serde_json::{Number, Value};
use wasmtime::{Val, ValType};

/// Converts one JSON argument to a value of type `ty`; the error says which argument and why.
pub fn to_val(value: &Value, ty: &ValType) -> Result<Val, String> {
    match ty {
        ValType::I32 => integer(value, i32::MIN.into(), u32::MAX.into(), "i32")
            .map(|n| Val::I32(n as u32 as i32)),
        ValType::I64 => integer(value, i64::MIN.into(), u64::MAX.into(), "i64")
            .map(|n| Val::I64(n as u64 as i64)),
        ValType::F32 => {
            let x = float(value, "f32")?;
            let narrowed = x as f32;
            if x.is_finite() && narrowed.is_infinite() {
                return Err(format!(
                    "{value} is outside the range of f32 (about ±3.4e38)"
                ));
            }
            Ok(Val::F32(narrowed.to_bits()))
        }
        ValType::F64 => float(value, "f64").map(|x| Val::F64(x.to_bits())),
        other => Err(format!(
            "parameters of type {other} cannot be given in JSON; only i32, i64, f32 and f64 can"
        )),
    }
}

/// Reads an integer within `[min, max]` from a JSON number or a decimal string.
fn integer(value: &Value, min: i128, max: i128, ty: &str) -> Result<i128, String> {
    let parsed: Option<i128> = match value {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(_) => Err(format!(
            "{value} does not fit {ty} (accepted: {min} to {max}, signed or unsigned spelling)"
        )),
        None => Err(format!(
            "{value} is not an integer; {ty} takes a whole JSON number or a decimal string"
        )),
    }
}

/// Reads a float from a JSON number or one of the non-finite names.
fn float(value: &Value, ty: &str) -> Result<f64, String> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("{value} is not a number")),
        Value::String(s) => match s.trim() {
            "NaN" | "nan" => Ok(f64::NAN),
            "Infinity" | "+Infinity" | "inf" | "+inf" => Ok(f64::INFINITY),
            "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
            other => other.parse::<f64>().map_err(|_| {
                format!("{value} is not a number; {ty} takes a JSON number, \"NaN\", \"Infinity\" or \"-Infinity\"")
            }),
        },
        _ => Err(format!(
            "{value} is not a number; {ty} takes a JSON number, \"NaN\", \"Infinity\" or \"-Infinity\""
        )),
    }
}

/// Renders one Wasm value as JSON (see the module doc for the rules).
pub fn from_val(val: &Val) -> Value {
    match val {
        Val::I32(n) => Value::from(*n),
        Val::I64(n) => Value::from(*n),
        Val::F32(bits) => {
            let x = f32::from_bits(*bits);
            // The shortest decimal that reads back as this f32, not the f64 widening's digits.
            non_finite(f64::from(x))
                .unwrap_or_else(|| number(x.to_string().parse().unwrap_or(f64::from(x))))
        }
        Val::F64(bits) => {
            let x = f64::from_bits(*bits);
            non_finite(x).unwrap_or_else(|| number(x))
        }
        Val::V128(v) => Value::String(format!("0x{:032x}", v.as_u128())),
        _ => Value::Null,
    }
}

fn non_finite(x: f64) -> Option<Value> {
    if x.is_nan() {
        Some(Value::from("NaN"))
    } else if x.is_infinite() {
        Some(Value::from(if x > 0.0 { "Infinity" } else { "-Infinity" }))
    } else {
        None
    }
}

fn number(x: f64) -> Value {
    // Finite by construction (callers handle NaN and infinities first).
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// Renders a list of results: `null` for none, the value for one, an array for several.
pub fn results_to_json(results: &[Val]) -> Value {
    match results {
        [] => Value::Null,
        [one] => from_val(one),
        many => Value::Array(many.iter().map(from_val).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn i64_of(v: Value) -> Result<i64, String> {
        to_val(&v, &ValType::I64).map(|v| v.unwrap_i64())
    }

    #[test]
    fn i64_accepts_both_spellings_of_the_same_bits() {
        assert_eq!(i64_of(json!(-1)).unwrap(), -1);
        assert_eq!(i64_of(json!(18446744073709551615u64)).unwrap(), -1);
        assert_eq!(i64_of(json!("18446744073709551615")).unwrap(), -1);
        assert_eq!(i64_of(json!(i64::MIN)).unwrap(), i64::MIN);
        assert_eq!(i64_of(json!("12")).unwrap(), 12);
    }

    #[test]
    fn out_of_range_and_fractions_are_refused() {
        assert!(
            i64_of(json!("18446744073709551616"))
                .unwrap_err()
                .contains("does not fit i64")
        );
        assert!(i64_of(json!(1.5)).unwrap_err().contains("not an integer"));
        assert!(i64_of(json!(true)).is_err());
        let err = to_val(&json!(4294967296u64), &ValType::I32).unwrap_err();
        assert!(err.contains("does not fit i32"), "{err}");
        assert_eq!(
            to_val(&json!(4294967295u64), &ValType::I32)
                .unwrap()
                .unwrap_i32(),
            -1
        );
        assert!(
            to_val(&json!(1e39), &ValType::F32)
                .unwrap_err()
                .contains("range of f32")
        );
    }

    #[test]
    fn floats_round_trip_including_non_finite() {
        for (input, expected) in [
            (json!(0.1), json!(0.1)),
            (json!("NaN"), json!("NaN")),
            (json!("Infinity"), json!("Infinity")),
            (json!("-Infinity"), json!("-Infinity")),
            (json!(-0.0), json!(-0.0)),
        ] {
            assert_eq!(from_val(&to_val(&input, &ValType::F32).unwrap()), expected);
            assert_eq!(from_val(&to_val(&input, &ValType::F64).unwrap()), expected);
        }
    }

    #[test]
    fn results_shape() {
        assert_eq!(results_to_json(&[]), Value::Null);
        assert_eq!(results_to_json(&[Val::I64(-1)]), json!(-1));
        assert_eq!(results_to_json(&[Val::I32(1), Val::I64(2)]), json!([1, 2]));
    }
}
