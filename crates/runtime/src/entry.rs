//! Which export to call, following the seed's rules.
//!
//! 1. An entry named explicitly (the input's `entry`, else `ENTRY`) is called if exported, and is
//!    an `entry_not_found` error listing the exports otherwise: never silently something else.
//! 2. With no name, the default `run` is called if exported; else `add(ADD_X, ADD_Y)`, the seed's
//!    fallback; else a WASI command's `_start`.
//!
//! `add` called without arguments takes `ADD_X` and `ADD_Y`. `_start` is run as a WASI command.

use crate::RuntimeError;
use serde_json::Value;
use std::fmt::Write;
use wasm_exec_task::text::encoded_len;
use wasmtime::{ExternType, FuncType, Module};

/// The entry used when none is named.
pub const DEFAULT_ENTRY: &str = "run";
/// The seed's fallback entry.
pub const ADD_ENTRY: &str = "add";
/// A WASI command's entry.
pub const COMMAND_ENTRY: &str = "_start";
/// A WASI reactor's initialiser, called once before the entry.
pub const INITIALIZE_ENTRY: &str = "_initialize";

/// What the caller asked for.
#[derive(Debug, Clone, Default)]
pub struct EntryRequest {
    /// The entry named by the input document or the configuration, if any.
    pub named: Option<String>,
    /// The arguments given, if any.
    pub args: Option<Vec<Value>>,
    /// Arguments for `add` when it is called without any (`ADD_X`, `ADD_Y`).
    pub add_fallback: [Value; 2],
}

/// The resolved call.
#[derive(Debug, Clone)]
pub struct EntryCall {
    /// The export to call.
    pub name: String,
    /// The arguments, as JSON (converted by the export's types later).
    pub args: Vec<Value>,
    /// Its type.
    pub ty: FuncType,
}

impl EntryCall {
    /// Whether this is a WASI command's `_start` (input on stdin, exit status reported).
    pub fn is_command(&self) -> bool {
        self.name == COMMAND_ENTRY
    }
}

/// Picks the entry of `module` for `request` (see the module doc for the rules).
pub fn resolve(module: &Module, request: &EntryRequest) -> Result<EntryCall, RuntimeError> {
    let call = |name: &str, ty: FuncType| {
        let args = match (&request.args, name) {
            (Some(args), _) => args.clone(),
            (None, ADD_ENTRY) => request.add_fallback.to_vec(),
            (None, _) => Vec::new(),
        };
        EntryCall {
            name: name.to_owned(),
            args,
            ty,
        }
    };
    if let Some(name) = &request.named {
        return match exported_func(module, name) {
            Some(ty) => Ok(call(name, ty)),
            None => Err(RuntimeError::EntryNotFound(format!(
                "entry \"{name}\" is not exported; exports: {}; check ENTRY or the input's \"entry\"",
                list_exports(module)
            ))),
        };
    }
    for name in [DEFAULT_ENTRY, ADD_ENTRY, COMMAND_ENTRY] {
        if let Some(ty) = exported_func(module, name) {
            return Ok(call(name, ty));
        }
    }
    Err(RuntimeError::EntryNotFound(format!(
        "no entry named and the module exports none of run, add or _start; exports: {}; set ENTRY or the input's \"entry\"",
        list_exports(module)
    )))
}

/// The type of the exported function `name`, if there is one.
pub fn exported_func(module: &Module, name: &str) -> Option<FuncType> {
    match module.get_export(name)? {
        ExternType::Func(ty) => Some(ty),
        _ => None,
    }
}

/// Most exports [`list_exports`] names; the rest are counted.
pub const LISTED_EXPORTS: usize = 50;
/// Most bytes (as encoded in the result document) of the names [`list_exports`] lists, so the
/// message stays well within the error message cap whatever the export names are.
pub const LISTED_EXPORTS_BYTES: usize = 2048;

/// The module's exported functions with their signatures, e.g. `add(i64, i64) -> i64, fib(i64)`:
/// at most [`LISTED_EXPORTS`] of them in [`LISTED_EXPORTS_BYTES`], then `and N more`.
pub fn list_exports(module: &Module) -> String {
    let mut out = String::new();
    let (mut listed, mut more, mut bytes) = (0usize, 0usize, 0usize);
    for export in module.exports() {
        if let ExternType::Func(ty) = export.ty() {
            let sig = signature(export.name(), &ty);
            let cost: usize = sig.chars().map(encoded_len).sum::<usize>() + 2;
            if listed == LISTED_EXPORTS || bytes + cost > LISTED_EXPORTS_BYTES {
                more += 1;
                continue;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(&sig);
            (listed, bytes) = (listed + 1, bytes + cost);
        }
    }
    match (listed, more) {
        (0, 0) => out.push_str("(no functions)"),
        (0, more) => {
            let _ = write!(out, "{more} functions with long names");
        }
        (_, 0) => {}
        (_, more) => {
            let _ = write!(out, " and {more} more");
        }
    }
    out
}

/// Renders `name(params) -> results`.
pub fn signature(name: &str, ty: &FuncType) -> String {
    let params: Vec<String> = ty.params().map(|p| p.to_string()).collect();
    let results: Vec<String> = ty.results().map(|r| r.to_string()).collect();
    let mut out = format!("{name}({})", params.join(", "));
    match results.len() {
        0 => {}
        1 => {
            let _ = write!(out, " -> {}", results[0]);
        }
        _ => {
            let _ = write!(out, " -> ({})", results.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn module(wat: &str) -> Module {
        Module::new(&wasmtime::Engine::default(), wat).unwrap()
    }

    fn request(named: Option<&str>, args: Option<Vec<Value>>) -> EntryRequest {
        EntryRequest {
            named: named.map(str::to_owned),
            args,
            add_fallback: [json!(5), json!(7)],
        }
    }

    const ADD_AND_FIB: &str = r#"(module
        (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
        (func (export "fib") (param i64) (result i64) local.get 0))"#;

    #[test]
    fn falls_back_to_add_with_add_x_and_add_y() {
        let call = resolve(&module(ADD_AND_FIB), &request(None, None)).unwrap();
        assert_eq!(call.name, "add");
        assert_eq!(call.args, vec![json!(5), json!(7)]);
    }

    #[test]
    fn run_is_preferred_when_exported() {
        let m = module(
            r#"(module (func (export "add") (param i64 i64) (result i64) i64.const 0)
                                   (func (export "run") (result i32) i32.const 1))"#,
        );
        assert_eq!(resolve(&m, &request(None, None)).unwrap().name, "run");
    }

    #[test]
    fn missing_entry_lists_exports() {
        let err = resolve(&module(ADD_AND_FIB), &request(Some("fibb"), None)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RuntimeError::EntryNotFound(_)));
        assert!(msg.contains("\"fibb\""), "{msg}");
        assert!(
            msg.contains("add(i64, i64) -> i64, fib(i64) -> i64"),
            "{msg}"
        );
    }

    #[test]
    fn nothing_to_run_is_entry_not_found() {
        let m = module(r#"(module (func (export "other")))"#);
        let err = resolve(&m, &request(None, None)).unwrap_err();
        assert!(err.to_string().contains("other()"), "{err}");
    }

    #[test]
    fn long_export_lists_are_cut_after_fifty() {
        let exports: String = (0..60)
            .map(|i| format!(r#"(func (export "f{i}"))"#))
            .collect();
        let listed = list_exports(&module(&format!("(module {exports})")));
        assert!(listed.contains("f49()"), "{listed}");
        assert!(!listed.contains("f50()"), "{listed}");
        assert!(listed.ends_with(" and 10 more"), "{listed}");
    }

    #[test]
    fn signature_renders_multiple_results() {
        let m = module(
            r#"(module (func (export "p") (param f32) (result i32 f64) i32.const 0 f64.const 0))"#,
        );
        assert_eq!(list_exports(&m), "p(f32) -> (i32, f64)");
    }
}
