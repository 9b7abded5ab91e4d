//! Checking an uploaded module without compiling it: WAT text turned into binary, the shape
//! check, wasmtime's validation with the engine's own features, and its exported functions with
//! their signatures. What the coordinator's `POST /v1/modules` answers.

use crate::{EngineOptions, ModuleLimits, RuntimeError};
use wasmparser::{CompositeInnerType, ExternalKind, FuncType, Parser, Payload, TypeRef};

/// One exported function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFunction {
    /// Its export name.
    pub name: String,
    /// Its parameter types (`i32`, `i64`, `f32`, `f64`, `v128`, ...).
    pub params: Vec<String>,
    /// Its result types.
    pub results: Vec<String>,
    /// `name(params) -> results`, as error messages write it.
    pub signature: String,
}

/// A module that passed every check.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// The binary module (WAT text converted; binary as given).
    pub wasm: Vec<u8>,
    /// Whether it was given as WAT text.
    pub from_wat: bool,
    /// Its exported functions, in export order.
    pub exports: Vec<ExportedFunction>,
}

/// Validates modules as the runtime's engine would, without compiling them.
pub struct Inspector {
    engine: wasmtime::Engine,
    limits: ModuleLimits,
}

impl Inspector {
    /// An inspector with the engine `options` tasks run under (features must match, so that a
    /// module accepted here is one the runtime accepts) and the module `limits`.
    pub fn new(options: &EngineOptions, limits: ModuleLimits) -> Result<Self, RuntimeError> {
        Ok(Self {
            engine: options.engine()?,
            limits,
        })
    }

    /// Checks `bytes` (binary Wasm or WAT text): size, shape, validation. A failure is a
    /// `bad_module` error naming what is wrong (never quoting the bytes).
    pub fn inspect(&self, bytes: &[u8]) -> Result<Inspected, RuntimeError> {
        self.limits.check_size(bytes.len())?;
        let from_wat = !bytes.starts_with(b"\0asm");
        let wasm = if from_wat {
            wat::parse_bytes(bytes)
                .map_err(|e| {
                    RuntimeError::BadModule(format!(
                        "the body is neither binary Wasm (no \\0asm magic) nor valid WAT text: {e}"
                    ))
                })?
                .into_owned()
        } else {
            bytes.to_vec()
        };
        self.limits.check_size(wasm.len())?;
        self.limits.check(&wasm)?;
        wasmtime::Module::validate(&self.engine, &wasm).map_err(|e| {
            RuntimeError::BadModule(format!(
                "the module does not validate: {}",
                crate::classify::one_line(&e)
            ))
        })?;
        let exports = exported_functions(&wasm)?;
        Ok(Inspected {
            wasm,
            from_wat,
            exports,
        })
    }
}

/// The exported functions of a valid binary module, with their types.
fn exported_functions(wasm: &[u8]) -> Result<Vec<ExportedFunction>, RuntimeError> {
    let bad = |e: wasmparser::BinaryReaderError| RuntimeError::BadModule(e.to_string());
    // Type index -> its function type (`None` for a GC struct or array type).
    let mut types: Vec<Option<FuncType>> = Vec::new();
    // Function index -> its type index, imports first.
    let mut functions: Vec<u32> = Vec::new();
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(bad)? {
            Payload::TypeSection(section) => {
                for group in section {
                    for sub in group.map_err(bad)?.into_types() {
                        types.push(match sub.composite_type.inner {
                            CompositeInnerType::Func(f) => Some(f),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    if let TypeRef::Func(ty) | TypeRef::FuncExact(ty) = import.map_err(bad)?.ty {
                        functions.push(ty);
                    }
                }
            }
            Payload::FunctionSection(section) => {
                for ty in section {
                    functions.push(ty.map_err(bad)?);
                }
            }
            Payload::ExportSection(section) => {
                for export in section {
                    let export = export.map_err(bad)?;
                    if export.kind == ExternalKind::Func {
                        exports.push((export.name.to_owned(), export.index));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(exports
        .into_iter()
        .filter_map(|(name, index)| {
            let ty = types
                .get(*functions.get(index as usize)? as usize)?
                .as_ref()?;
            let params: Vec<String> = ty.params().iter().map(ToString::to_string).collect();
            let results: Vec<String> = ty.results().iter().map(ToString::to_string).collect();
            let signature = render(&name, &params, &results);
            Some(ExportedFunction {
                name,
                params,
                results,
                signature,
            })
        })
        .collect())
}

/// `name(a, b) -> r`, or `-> (r, s)` for several results, as [`crate::entry::signature`].
fn render(name: &str, params: &[String], results: &[String]) -> String {
    let mut out = format!("{name}({})", params.join(", "));
    match results {
        [] => {}
        [one] => out.push_str(&format!(" -> {one}")),
        many => out.push_str(&format!(" -> ({})", many.join(", "))),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspector() -> Inspector {
        Inspector::new(&EngineOptions::default(), ModuleLimits::default()).unwrap()
    }

    #[test]
    fn wat_is_converted_and_exports_carry_their_signatures() {
        let wat = br#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
            (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
            (func (export "pair") (result i32 f64) i32.const 1 f64.const 2)
            (memory (export "memory") 1))"#;
        let inspected = inspector().inspect(wat).unwrap();
        assert!(inspected.from_wat);
        assert!(inspected.wasm.starts_with(b"\0asm"));
        let signatures: Vec<&str> = inspected
            .exports
            .iter()
            .map(|e| e.signature.as_str())
            .collect();
        assert_eq!(signatures, ["add(i64, i64) -> i64", "pair() -> (i32, f64)"]);
        assert_eq!(inspected.exports[0].params, ["i64", "i64"]);
        let again = inspector().inspect(&inspected.wasm).unwrap();
        assert!(!again.from_wat);
        assert_eq!(again.wasm, inspected.wasm);
    }

    #[test]
    fn invalid_modules_are_bad_module_with_the_reason() {
        let cases: [(&[u8], &str); 3] = [
            (b"hello, world", "neither binary Wasm"),
            (b"\0asm\x01\0\0\0\x01", "unexpected end"),
            (
                br#"(module (func (export "f") (result i32) i64.const 1))"#,
                "does not validate",
            ),
        ];
        for (bytes, words) in cases {
            let e = inspector().inspect(bytes).unwrap_err();
            assert_eq!(e.kind(), wasm_exec_task::ErrorKind::BadModule, "{e}");
            assert!(e.to_string().contains(words), "{e}");
        }
    }
}
