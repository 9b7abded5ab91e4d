//! The fuel budget (`FUEL`) as a hard limit: a run that needs more than its budget ends in
//! `out_of_fuel`, one that needs at most its budget ends as it would unmetered, on every path.
//!
//! wasmtime checks fuel only at function entries and loop headers, and traps when what was used
//! reaches what was set. Code after the last check (a loop's tail, an unrolled body, the return)
//! ran unchecked: fib(40) needs 187 units, yet with 100 it returned its result, and the store's
//! remaining fuel, which saturates at 0, hid the overrun (`fuel_consumed` said 100). So the store
//! gets one unit more than the budget, which makes "trap" mean "used more than the budget", and a
//! call hook does the missing check where control leaves the guest: before each host call (fuel is
//! saved there, so the guest never talks past its budget) and on every return from Wasm,
//! including a trap's (fuel saved before a trap never overstates the use, so a guest over budget
//! by then ran out first). A run that ends `out_of_fuel` reports `fuel_consumed` = the budget.

use wasmtime::{CallHook, Store, StoreContextMut, Trap};

/// The budget of one run's store, and how to read back what it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FuelBudget {
    /// The task's budget, in fuel units (`u64::MAX` when metered without a limit).
    budget: u64,
    /// What the store was given: the budget plus one, so that wasmtime's own checks trap only
    /// once the budget is exceeded (`u64::MAX` stays: 2^64 units are never used).
    injected: u64,
}

impl FuelBudget {
    /// Gives `store` (whose engine meters fuel) `budget` units and, for a real limit, installs
    /// the hook that ends the run once more than `budget` is used.
    pub(crate) fn install<T: 'static>(store: &mut Store<T>, budget: u64) -> Self {
        let fuel = Self {
            budget,
            injected: budget.saturating_add(1),
        };
        // Cannot fail: the caller's engine has fuel metering on.
        let _ = store.set_fuel(fuel.injected);
        if fuel.injected > budget {
            store.call_hook(move |store, hook| fuel.check(&store, hook));
        }
        fuel
    }

    /// The fuel the run used: exact when it stayed within the budget, the budget when it ran out.
    pub(crate) fn consumed<T>(&self, store: &Store<T>) -> u64 {
        let remaining = store.get_fuel().unwrap_or(0);
        self.injected.saturating_sub(remaining).min(self.budget)
    }

    /// The call hook: `out_of_fuel` where the guest hands control to the host over budget.
    fn check<T>(&self, store: &StoreContextMut<'_, T>, hook: CallHook) -> wasmtime::Result<()> {
        let leaving = matches!(hook, CallHook::CallingHost | CallHook::ReturningFromWasm);
        // No fuel left of `injected` means more than `budget` was used.
        if leaving && store.get_fuel().is_ok_and(|remaining| remaining == 0) {
            return Err(Trap::OutOfFuel.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineOptions, Interruption};
    use wasmtime::{Instance, Module};

    /// A function of straight-line code, no loop: `n` units with no check after its entry.
    fn straight(n: usize) -> String {
        let body = "i64.const 1 i64.add ".repeat(n / 2);
        format!("(module (func (export \"run\") (result i64) i64.const 0 {body}))")
    }

    fn run(wat: &str, budget: u64) -> (Result<i64, wasmtime::Error>, u64) {
        let options = EngineOptions {
            interruption: Interruption::External,
            fuel_metering: true,
            ..EngineOptions::default()
        };
        let engine = options.engine().unwrap();
        let module = Module::new(&engine, wat).unwrap();
        let mut store = Store::new(&engine, ());
        let fuel = FuelBudget::install(&mut store, budget);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let run = instance
            .get_typed_func::<(), i64>(&mut store, "run")
            .unwrap();
        let result = run.call(&mut store, ());
        (result, fuel.consumed(&store))
    }

    #[test]
    fn straight_line_code_cannot_run_past_its_budget() {
        let wat = straight(100);
        let (ok, need) = run(&wat, 1_000);
        assert_eq!(ok.unwrap(), 50);
        assert!(need > 100, "100 operators cost more than 100 units: {need}");
        assert_eq!(run(&wat, need).1, need, "the exact budget suffices");
        for budget in [1, 10, need / 2, need - 1] {
            let (out, consumed) = run(&wat, budget);
            let trap = out.expect_err("over budget").downcast::<Trap>().unwrap();
            assert_eq!(
                (trap, consumed),
                (Trap::OutOfFuel, budget),
                "budget {budget}"
            );
        }
    }

    #[test]
    fn an_unlimited_budget_installs_no_check() {
        let (out, consumed) = run(&straight(10), u64::MAX);
        assert_eq!(out.unwrap(), 5);
        assert!(consumed > 10 && consumed < 100, "{consumed}");
    }
}
