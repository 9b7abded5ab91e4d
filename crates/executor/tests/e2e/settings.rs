//! Settings out of their range: each is `bad_input` (exit 10) naming the setting and the range,
//! with the result document still written, never a panic.

use crate::util::{assert_failed, exec};
use wasm_exec_task::ErrorKind;

#[test]
fn out_of_range_numbers_are_bad_input_with_a_document() {
    let cases = [
        ("TIMEOUT_SEC", "1e20", "at most 604800"),
        ("TIMEOUT_SEC", "-1", "above 0"),
        ("TIMEOUT_SEC", "NaN", "above 0"),
        ("MAX_MEMORY_MB", "18446744073709551615", "from 1 to 65536"),
        ("MAX_MEMORY_MB", "0", "from 1 to 65536"),
        (
            "MAX_OUTPUT_BYTES",
            "18446744073709551615",
            "from 0 to 67108864",
        ),
        (
            "MAX_WASM_STACK_KB",
            "18446744073709551615",
            "from 1 to 65536",
        ),
        ("MAX_WASM_STACK_KB", "0", "from 1 to 65536"),
    ];
    for (setting, value, range) in cases {
        let out = exec("host/wasm/add.wasm").env(setting, value).run();
        assert_failed(&out, ErrorKind::BadInput, &[setting, range, "must be"]);
        let file: serde_json::Value =
            serde_json::from_str(&out.file).unwrap_or_else(|e| panic!("{setting}={value}: {e}"));
        assert_eq!(file["error"]["kind"], "bad_input", "{setting}={value}");
    }
}

#[test]
fn the_largest_values_in_range_run() {
    let out = exec("host/wasm/add.wasm")
        .env("TIMEOUT_SEC", "604800")
        .env("MAX_MEMORY_MB", "65536")
        .env("FUEL", "18446744073709551615")
        .env("MAX_OUTPUT_BYTES", "67108864")
        .env("MAX_WASM_STACK_KB", "65536")
        .run();
    crate::util::assert_ok(&out, serde_json::json!(12));
}
