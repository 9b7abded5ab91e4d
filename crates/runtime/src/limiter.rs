//! One memory budget per task: every linear memory and every table of a store draw on the same
//! `MAX_MEMORY_MB`, so a module cannot multiply its share by declaring more memories or tables.
//!
//! Tables are counted in bytes of their elements (a pointer each, [`TABLE_ELEMENT_BYTES`]).
//! Growth past the budget traps with [`LimitExceeded`] (reported as `out_of_memory`) rather than
//! returning -1, so the outcome does not depend on what the guest's allocator does on failure.

use wasmtime::ResourceLimiter;

/// Bytes one table element costs the budget: a pointer (a `funcref` or `externref` slot).
pub const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Most linear memories one store may create.
const STORE_MEMORIES: usize = 16;
/// Most tables one store may create (backstop, as [`STORE_MEMORIES`]).
const STORE_TABLES: usize = 16;

/// Caps the bytes of all linear memories and tables of one store together.
#[derive(Debug, Clone)]
pub struct TaskLimiter {
    /// The task's budget, in bytes (`MAX_MEMORY_MB`).
    budget_bytes: usize,
    /// Bytes granted so far, across every memory and table.
    used_bytes: usize,
    /// The bytes of the last grant, taken back if wasmtime then fails that growth.
    last_grant: usize,
}

/// The error a guest traps with when it grows past its [`TaskLimiter`] budget.
#[derive(Debug, thiserror::Error)]
#[error(
    "the guest tried to grow a {what} to {desired} bytes, which would bring its memories and tables together to {total} bytes, past the task's limit of {limit} bytes (MAX_MEMORY_MB); raise the limit or make the guest use less"
)]
pub struct LimitExceeded {
    /// `linear memory` or `table`.
    pub what: &'static str,
    /// The size asked for this memory or table, in bytes.
    pub desired: usize,
    /// What every memory and table would take together after the growth, in bytes.
    pub total: usize,
    /// The budget, in bytes.
    pub limit: usize,
}

impl TaskLimiter {
    /// A limiter granting at most `budget_bytes` to all memories and tables of a store together.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            used_bytes: 0,
            last_grant: 0,
        }
    }

    /// Bytes granted so far to all memories and tables.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// Grants growth of one memory or table from `current` to `desired` bytes, or fails.
    fn grant(
        &mut self,
        what: &'static str,
        current: usize,
        desired: usize,
    ) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current);
        let total = self.used_bytes.saturating_add(more);
        if total > self.budget_bytes {
            return Err(wasmtime::Error::new(LimitExceeded {
                what,
                desired,
                total,
                limit: self.budget_bytes,
            }));
        }
        self.used_bytes = total;
        self.last_grant = more;
        Ok(true)
    }

    /// Takes back the last grant: wasmtime could not grow after all (e.g. mmap failed).
    fn revoke_last_grant(&mut self) {
        self.used_bytes = self.used_bytes.saturating_sub(self.last_grant);
        self.last_grant = 0;
    }
}

impl ResourceLimiter for TaskLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the memory's own declared maximum wasmtime refuses anyway (memory.grow gives -1):
        // nothing is granted, so nothing is counted.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.grant("linear memory", current, desired)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.revoke_last_grant();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let bytes = |elements: usize| elements.saturating_mul(TABLE_ELEMENT_BYTES);
        self.grant("table", bytes(current), bytes(desired))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.revoke_last_grant();
        Ok(())
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        STORE_TABLES
    }

    fn memories(&self) -> usize {
        STORE_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut limiter = TaskLimiter::new(1000);
        assert!(limiter.memory_growing(0, 600, None).unwrap());
        assert!(limiter.memory_growing(0, 300, None).unwrap());
        let err = limiter.table_growing(0, 20, None).unwrap_err();
        let exceeded = err.downcast_ref::<LimitExceeded>().unwrap();
        assert_eq!((exceeded.total, exceeded.limit), (900 + 160, 1000));
        assert!(limiter.table_growing(0, 12, None).unwrap());
        assert_eq!(limiter.used_bytes(), 996);
    }

    #[test]
    fn growth_past_a_declared_maximum_or_that_fails_costs_nothing() {
        let mut limiter = TaskLimiter::new(1000);
        assert!(!limiter.memory_growing(0, 600, Some(500)).unwrap());
        assert_eq!(limiter.used_bytes(), 0);
        assert!(limiter.memory_growing(100, 700, None).unwrap());
        limiter
            .memory_grow_failed(wasmtime::Error::msg("mmap failed"))
            .unwrap();
        assert_eq!(limiter.used_bytes(), 0);
    }
}
