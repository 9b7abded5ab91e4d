//! The module's shape, checked before compiling: a module built to make the compiler slow or
//! greedy (thousands of locals across thousands of nested blocks, huge bodies, floods of exports)
//! is refused as `bad_module` in one linear pass, without running the compiler, which cannot be
//! interrupted.
//!
//! [`ModuleLimits`] holds every maximum; its defaults leave room for real toolchain output: a
//! 6.6 MB Go 1.26 wasip1 program (fmt, encoding/json, regexp, math/big, text/template, gzip)
//! measures 4,501 functions, at most 20 locals, 50,636 body bytes and a nesting depth of 549 in
//! one function, locals times depth at most 7,633 in one function and 581,959 in all (see
//! `tests/shape.rs`). At the per-function maxima the costliest shape (a loop around 2,000 nested
//! blocks, 100 locals live across all of them) compiles in about 0.6 s; the attack review's
//! 2,000 locals across 20,000 blocks took 21 s and 1.4 GB.

use crate::RuntimeError;
use wasmparser::{Operator, Parser, Payload, TypeRef};

/// The largest shape a module may have; every field is a maximum, checked before compilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModuleLimits {
    /// Bytes of the module as given (binary, or WAT text). Default 64 MiB.
    pub max_module_bytes: usize,
    /// Functions, imported and defined. Default 200,000.
    pub max_functions: u32,
    /// Locals declared by one function (parameters excluded). Default 50,000 (also wasmtime's).
    pub max_locals: u32,
    /// Bytes of one function body. Default 4 MiB.
    pub max_body_bytes: u32,
    /// Blocks (`block`, `loop`, `if`, `try_table`) open at once in one function. Default 2,000.
    pub max_nesting_depth: u32,
    /// Locals of one function times its nesting depth: the compiler's cost grows with both
    /// together (faster than either alone). Default 200,000.
    pub max_locals_times_depth: u64,
    /// The sum of locals times nesting depth over every function, so that many functions each
    /// under the maximum cannot add up to a long compile. Default 20,000,000.
    pub max_locals_times_depth_total: u64,
    /// Linear memories, imported and defined. Default 16.
    pub max_memories: u32,
    /// Tables, imported and defined. Default 16.
    pub max_tables: u32,
    /// Globals, imported and defined. Default 100,000.
    pub max_globals: u32,
    /// Exports. Default 20,000.
    pub max_exports: u32,
    /// Imports. Default 20,000.
    pub max_imports: u32,
    /// Types. Default 100,000.
    pub max_types: u32,
    /// Data segments, and element segments (each). Default 100,000.
    pub max_segments: u32,
}

impl Default for ModuleLimits {
    fn default() -> Self {
        Self {
            max_module_bytes: 64 << 20,
            max_functions: 200_000,
            max_locals: 50_000,
            max_body_bytes: 4 << 20,
            max_nesting_depth: 2_000,
            max_locals_times_depth: 200_000,
            max_locals_times_depth_total: 20_000_000,
            max_memories: 16,
            max_tables: 16,
            max_globals: 100_000,
            max_exports: 20_000,
            max_imports: 20_000,
            max_types: 100_000,
            max_segments: 100_000,
        }
    }
}

/// What one pass over a module measured: counts, and the largest function by each measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModuleShape {
    /// Functions, imported and defined.
    pub functions: u32,
    /// Linear memories, imported and defined.
    pub memories: u32,
    /// Tables, imported and defined.
    pub tables: u32,
    /// Globals, imported and defined.
    pub globals: u32,
    /// Most locals of one function.
    pub max_locals: u32,
    /// Most body bytes of one function.
    pub max_body_bytes: u32,
    /// Deepest nesting of blocks in one function.
    pub max_nesting_depth: u32,
    /// Most locals times nesting depth of one function.
    pub max_locals_times_depth: u64,
    /// Locals times nesting depth summed over every function.
    pub locals_times_depth_total: u64,
}

/// One function's measures, compared with the limits as soon as they are known.
struct Function {
    index: u32,
    locals: u32,
    depth: u32,
}

impl ModuleLimits {
    /// Measures `wasm` (a binary module) and checks it against these limits.
    ///
    /// Errors are `bad_module` and name what was measured, its value and its maximum, with the
    /// function index for per-function measures.
    pub fn check(&self, wasm: &[u8]) -> Result<ModuleShape, RuntimeError> {
        let mut shape = ModuleShape::default();
        let mut imported_functions = 0u32;
        let mut defined = 0u32;
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.map_err(parse_error)? {
                Payload::TypeSection(s) => over("types", s.count(), self.max_types)?,
                Payload::ImportSection(s) => {
                    let mut imports = 0u32;
                    for import in s.into_imports() {
                        imports += 1;
                        match import.map_err(parse_error)?.ty {
                            TypeRef::Func(_) | TypeRef::FuncExact(_) => imported_functions += 1,
                            TypeRef::Memory(_) => shape.memories += 1,
                            TypeRef::Table(_) => shape.tables += 1,
                            TypeRef::Global(_) => shape.globals += 1,
                            TypeRef::Tag(_) => {}
                        }
                        over("imports", imports, self.max_imports)?;
                    }
                }
                Payload::FunctionSection(s) => {
                    shape.functions = imported_functions.saturating_add(s.count());
                    over("functions", shape.functions, self.max_functions)?;
                }
                Payload::TableSection(s) => shape.tables = shape.tables.saturating_add(s.count()),
                Payload::MemorySection(s) => {
                    shape.memories = shape.memories.saturating_add(s.count())
                }
                Payload::GlobalSection(s) => {
                    shape.globals = shape.globals.saturating_add(s.count())
                }
                Payload::ExportSection(s) => over("exports", s.count(), self.max_exports)?,
                Payload::ElementSection(s) => {
                    over("element segments", s.count(), self.max_segments)?
                }
                Payload::DataSection(s) => over("data segments", s.count(), self.max_segments)?,
                Payload::CodeSectionEntry(body) => {
                    let index = imported_functions.saturating_add(defined);
                    defined += 1;
                    self.check_function(index, &body, &mut shape)?;
                }
                Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                    return Err(RuntimeError::BadModule(
                        "the module is a component, which is not supported; give a core module"
                            .into(),
                    ));
                }
                _ => {}
            }
            over("memories", shape.memories, self.max_memories)?;
            over("tables", shape.tables, self.max_tables)?;
            over("globals", shape.globals, self.max_globals)?;
        }
        Ok(shape)
    }

    /// Checks one function body: its size, locals, nesting depth and the two together.
    fn check_function(
        &self,
        index: u32,
        body: &wasmparser::FunctionBody<'_>,
        shape: &mut ModuleShape,
    ) -> Result<(), RuntimeError> {
        let bytes = u32::try_from(body.range().len()).unwrap_or(u32::MAX);
        in_function(
            index,
            "body bytes",
            bytes.into(),
            self.max_body_bytes.into(),
        )?;
        let mut function = Function {
            index,
            locals: 0,
            depth: 0,
        };
        let mut locals = body.get_locals_reader().map_err(parse_error)?;
        for _ in 0..locals.get_count() {
            let (count, _) = locals.read().map_err(parse_error)?;
            function.locals = function.locals.saturating_add(count);
            in_function(
                index,
                "locals",
                function.locals.into(),
                self.max_locals.into(),
            )?;
        }
        let mut operators = body.get_operators_reader().map_err(parse_error)?;
        let mut depth = 0u32;
        while !operators.eof() {
            match operators.read().map_err(parse_error)? {
                Operator::Block { .. }
                | Operator::Loop { .. }
                | Operator::If { .. }
                | Operator::Try { .. }
                | Operator::TryTable { .. } => {
                    depth += 1;
                    if depth > function.depth {
                        function.depth = depth;
                        self.check_depth(&function)?;
                    }
                }
                Operator::End | Operator::Delegate { .. } => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        shape.max_body_bytes = shape.max_body_bytes.max(bytes);
        shape.max_locals = shape.max_locals.max(function.locals);
        shape.max_nesting_depth = shape.max_nesting_depth.max(function.depth);
        let product = u64::from(function.locals) * u64::from(function.depth);
        shape.max_locals_times_depth = shape.max_locals_times_depth.max(product);
        shape.locals_times_depth_total = shape.locals_times_depth_total.saturating_add(product);
        if shape.locals_times_depth_total > self.max_locals_times_depth_total {
            return Err(RuntimeError::BadModule(format!(
                "the module's functions have locals times nesting depth {} in total (at function {index}), over the maximum of {}; the module is refused before compiling",
                shape.locals_times_depth_total, self.max_locals_times_depth_total
            )));
        }
        Ok(())
    }

    fn check_depth(&self, function: &Function) -> Result<(), RuntimeError> {
        in_function(
            function.index,
            "nesting depth",
            function.depth.into(),
            self.max_nesting_depth.into(),
        )?;
        let product = u64::from(function.locals) * u64::from(function.depth);
        in_function(
            function.index,
            "locals times nesting depth",
            product,
            self.max_locals_times_depth,
        )
    }

    /// Checks the size of the module as given, before it is parsed at all.
    pub fn check_size(&self, bytes: usize) -> Result<(), RuntimeError> {
        if bytes > self.max_module_bytes {
            return Err(RuntimeError::BadModule(format!(
                "the module is {bytes} bytes, over the maximum of {} bytes; give a smaller module",
                self.max_module_bytes
            )));
        }
        Ok(())
    }
}

fn over(what: &str, count: u32, max: u32) -> Result<(), RuntimeError> {
    if count > max {
        return Err(RuntimeError::BadModule(format!(
            "the module has {count} {what}, over the maximum of {max}; the module is refused before compiling"
        )));
    }
    Ok(())
}

fn in_function(index: u32, what: &str, value: u64, max: u64) -> Result<(), RuntimeError> {
    if value > max {
        return Err(RuntimeError::BadModule(format!(
            "function {index}: {what} {value}, over the maximum of {max}; the module is refused before compiling"
        )));
    }
    Ok(())
}

fn parse_error(e: wasmparser::BinaryReaderError) -> RuntimeError {
    RuntimeError::BadModule(format!("the module does not parse: {e}"))
}
