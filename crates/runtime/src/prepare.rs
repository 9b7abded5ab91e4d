//! The one step between loading a module and calling it, shared by the executor and the
//! coordinator's local backend so that both turn an input document into the same run: the
//! entry chosen (the input's, else the caller's, else the seed's fallbacks), the arguments
//! converted, the output captures made.

use crate::entry::EntryRequest;
use crate::module::LoadedModule;
use crate::runtime::{Captures, Plan, RunLimits, RunRequest, Runtime};
use serde_json::Value;
use wasm_exec_task::{ResultEnvelope, TaskInput};

/// A run ready to start on its module.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The entry and its converted arguments, and the envelope every outcome starts from.
    pub plan: Plan,
    /// What the guest gets: entry, stdin, limits.
    pub request: RunRequest,
    /// Its stdout and stderr, readable while it runs (the executor's watchdog reads them).
    pub captures: Captures,
}

impl Runtime {
    /// Prepares `input` on `module`: the input's entry, else `entry`; its arguments, else
    /// `add_fallback` for the seed's `add`; its text on stdin; `limits`. A bad entry or argument
    /// comes back as the failed result document.
    pub fn prepare(
        &self,
        module: &LoadedModule,
        input: &TaskInput,
        entry: Option<&str>,
        add_fallback: [Value; 2],
        limits: RunLimits,
    ) -> Result<Prepared, Box<ResultEnvelope>> {
        let request = RunRequest {
            entry: EntryRequest {
                named: input.entry.clone().or_else(|| entry.map(str::to_owned)),
                args: input.args.clone(),
                add_fallback,
            },
            stdin: input.text.clone().into_bytes(),
            limits,
            cancel: crate::CancelFlag::default(),
        };
        let plan = self.plan(module, &request)?;
        let captures = Captures::new(&request.limits);
        Ok(Prepared {
            plan,
            request,
            captures,
        })
    }

    /// Calls a prepared run on this thread (see [`Runtime::call`] for the stack it needs).
    pub fn run_prepared(&self, module: &LoadedModule, prepared: &Prepared) -> ResultEnvelope {
        self.call(
            module,
            &prepared.plan,
            &prepared.request,
            &prepared.captures,
        )
    }

    /// Calls a prepared run on a thread of its own, with the stack the Wasm stack limit needs.
    pub fn run_prepared_on_task_thread(
        &self,
        module: &LoadedModule,
        prepared: &Prepared,
    ) -> ResultEnvelope {
        self.call_on_task_thread(
            module,
            &prepared.plan,
            &prepared.request,
            &prepared.captures,
        )
    }
}
