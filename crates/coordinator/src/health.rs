//! Readiness: what is failing now, for `/readyz`. Apart from [`Metrics`], which only counts: a
//! failing operation of the task source is named here until it works again, and mirrored in
//! the `source_up` gauge and `source_errors` counter that `/metrics` exports.

use crate::metrics::{Metrics, OpLabel};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// What is failing now, by operation of the task source (`read`, `write`).
pub struct Health {
    /// The problem of each failing operation.
    problems: Mutex<BTreeMap<&'static str, String>>,
    /// `wasm_exec_source_up`: 1 while every operation works.
    up: Gauge,
    /// `wasm_exec_source_errors`: failures by operation.
    errors: Family<OpLabel, Counter>,
}

impl Health {
    /// Health whose changes show in `metrics`' source gauge and counter.
    pub fn new(metrics: &Metrics) -> Self {
        let (up, errors) = metrics.source_health();
        up.set(1);
        Self {
            problems: Mutex::default(),
            up,
            errors,
        }
    }

    /// Records that the source failed at `op`: counted, and named by `/readyz` until it works.
    pub fn source_failed(&self, op: &'static str, problem: impl Into<String>) {
        self.errors.get_or_create(&OpLabel { op }).inc();
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        problems.insert(op, problem.into());
        self.up.set(0);
    }

    /// Records that the source's `op` works (again).
    pub fn source_worked(&self, op: &'static str) {
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        if problems.remove(op).is_some() && problems.is_empty() {
            self.up.set(1);
        }
    }

    /// What is failing in the source now, if anything (`op: problem; ...`).
    pub fn source_problem(&self) -> Option<String> {
        let problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        (!problems.is_empty()).then(|| {
            problems
                .iter()
                .map(|(op, problem)| format!("{op}: {problem}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_source_is_named_until_every_operation_works_again() {
        let metrics = Metrics::default();
        let health = Health::new(&metrics);
        assert_eq!(health.source_problem(), None);
        health.source_failed("read", "the node at http://x is down");
        health.source_failed("write", "no funds");
        assert_eq!(health.up.get(), 0);
        let problem = health.source_problem().unwrap();
        assert!(problem.contains("read: the node") && problem.contains("write: no funds"));
        health.source_worked("read");
        assert_eq!(health.source_problem().as_deref(), Some("write: no funds"));
        assert_eq!(health.up.get(), 0);
        health.source_worked("write");
        assert_eq!((health.source_problem(), health.up.get()), (None, 1));
        assert_eq!(
            health.errors.get_or_create(&OpLabel { op: "read" }).get(),
            1
        );
        let text = metrics.render_registry().unwrap();
        assert!(text.contains("wasm_exec_source_up 1"), "{text}");
    }
}
