//! Integer and float edges: nothing silently truncated or misread, always valid JSON.

use crate::util::{assert_failed, assert_ok, exec};
use serde_json::{Value, json};
use wasm_exec_task::ErrorKind;

fn call(entry: &str, args: Value) -> crate::util::Outcome {
    exec("testdata/wat/types.wat")
        .env(
            "ARGS_JSON",
            json!({"entry": entry, "args": args}).to_string(),
        )
        .run()
}

#[test]
fn i64_accepts_signed_and_unsigned_spellings_and_renders_signed() {
    assert_ok(&call("id_i64", json!([18446744073709551615u64])), json!(-1));
    assert_ok(&call("id_i64", json!([-1])), json!(-1));
    assert_ok(&call("id_i64", json!([i64::MIN])), json!(i64::MIN));
    assert_ok(&call("id_i64", json!([i64::MAX])), json!(i64::MAX));
    assert_ok(
        &call("id_i64", json!(["9223372036854775808"])),
        json!(i64::MIN),
    );
}

#[test]
fn i32_edges() {
    assert_ok(&call("id_i32", json!([4294967295u64])), json!(-1));
    assert_ok(&call("id_i32", json!([-2147483648])), json!(-2147483648));
    let out = call("id_i32", json!([4294967296u64]));
    assert_failed(
        &out,
        ErrorKind::BadInput,
        &["does not fit i32", "argument 1 of id_i32(i32) -> i32"],
    );
}

#[test]
fn out_of_range_and_fractional_integers_are_refused() {
    assert_failed(
        &call("id_i64", json!(["18446744073709551616"])),
        ErrorKind::BadInput,
        &["does not fit i64"],
    );
    assert_failed(
        &call("id_i64", json!([1.5])),
        ErrorKind::BadInput,
        &["not an integer"],
    );
    assert_failed(&call("id_i64", json!([1e300])), ErrorKind::BadInput, &[]);
    assert_failed(&call("id_i64", json!([null])), ErrorKind::BadInput, &[]);
}

#[test]
fn the_sample_add_wraps_at_2_64() {
    let out = exec("host/wasm/add.wasm")
        .env("ARGS_JSON", "[18446744073709551615, 1]")
        .run();
    assert_ok(&out, json!(0));
}

#[test]
fn non_finite_floats_are_valid_json_strings() {
    assert_ok(&call("nan", json!([])), json!("NaN"));
    assert_ok(&call("nan_f32", json!([])), json!("NaN"));
    assert_ok(&call("inf", json!([])), json!("Infinity"));
    assert_ok(&call("neg_inf", json!([])), json!("-Infinity"));
    assert_ok(&call("id_f64", json!(["-Infinity"])), json!("-Infinity"));
    assert_ok(&call("id_f32", json!(["NaN"])), json!("NaN"));
}

#[test]
fn floats_keep_their_value() {
    assert_ok(&call("tenth_f32", json!([])), json!(0.1));
    assert_ok(&call("id_f64", json!([-0.0])), json!(-0.0));
    assert_ok(
        &call("id_f64", json!([1.7976931348623157e308])),
        json!(1.7976931348623157e308),
    );
    assert_ok(&call("id_f32", json!([3])), json!(3.0));
    assert_failed(
        &call("id_f32", json!([1e39])),
        ErrorKind::BadInput,
        &["range of f32"],
    );
}

#[test]
fn several_results_are_an_array_and_none_is_null() {
    assert_ok(
        &call("pair", json!([18446744073709551615u64, 2.5])),
        json!([-1, 2.5]),
    );
    assert_ok(&call("nothing", json!([])), Value::Null);
}

#[test]
fn unsupported_parameter_types_are_bad_input() {
    assert_failed(&call("simd", json!([0])), ErrorKind::BadInput, &["v128"]);
}
