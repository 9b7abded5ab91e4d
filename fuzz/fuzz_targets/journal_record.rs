//! libFuzzer entry for `wasm_exec_fuzz_targets::journal_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasm_exec_fuzz_targets::journal_record::journal_record(data));
