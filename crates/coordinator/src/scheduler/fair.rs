//! The queue of tasks waiting for a running slot, fair between tenants: one queue per tenant
//! (the default caller's and the source's tasks are one more), taken from in turn, so one
//! tenant's 10,000 queued tasks hold another's one up by at most one task per tenant. A tenant
//! at its concurrency quota is passed over until one of its tasks ends.

use super::Job;
use std::collections::{HashMap, VecDeque};

/// Per-tenant queues, taken round-robin.
#[derive(Debug, Default)]
pub(super) struct FairQueue {
    /// Each tenant's queued jobs (`None`: no tenant).
    queues: HashMap<Option<String>, VecDeque<Job>>,
    /// Tenants with queued jobs, in turn order (the next to take from is at the front).
    turn: VecDeque<Option<String>>,
    /// Running tasks per tenant.
    running: HashMap<Option<String>, usize>,
    /// Most running tasks per tenant (tenants not named here have no quota of their own).
    quotas: HashMap<String, usize>,
    len: usize,
}

impl FairQueue {
    /// An empty queue with these concurrency quotas (tenant -> most running).
    pub(super) fn new(quotas: HashMap<String, usize>) -> Self {
        Self {
            quotas,
            ..Self::default()
        }
    }

    /// Queues a job at the back of its tenant's queue.
    pub(super) fn push(&mut self, job: Job) {
        let queue = self.queues.entry(job.tenant.clone()).or_default();
        if queue.is_empty() {
            self.turn.push_back(job.tenant.clone());
        }
        queue.push_back(job);
        self.len += 1;
    }

    /// How many jobs are queued.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether some queued job's tenant is under its quota.
    pub(super) fn has_ready(&self) -> bool {
        self.turn.iter().any(|t| self.under_quota(t))
    }

    /// The next job in turn whose tenant is under its quota, counted as running; its tenant
    /// goes to the back of the turn.
    pub(super) fn pop(&mut self) -> Option<Job> {
        let at = self.turn.iter().position(|t| self.under_quota(t))?;
        let tenant = self.turn.remove(at)?;
        let queue = self.queues.get_mut(&tenant)?;
        let job = queue.pop_front()?;
        if !queue.is_empty() {
            self.turn.push_back(tenant.clone());
        }
        self.len -= 1;
        *self.running.entry(tenant).or_default() += 1;
        Some(job)
    }

    /// A job of `tenant` ended: its slot in the tenant's quota is free.
    pub(super) fn ended(&mut self, tenant: &Option<String>) {
        if let Some(n) = self.running.get_mut(tenant) {
            *n = n.saturating_sub(1);
        }
    }

    fn under_quota(&self, tenant: &Option<String>) -> bool {
        let quota = tenant.as_ref().and_then(|t| self.quotas.get(t));
        quota.is_none_or(|q| self.running.get(tenant).copied().unwrap_or(0) < *q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_exec_task::{IntakeRules, TaskSpec};

    fn job(id: &str, tenant: Option<&str>) -> Job {
        let task = TaskSpec::new(id, "fib.wasm", serde_json::json!([1]));
        Job {
            checked: task.check(&IntakeRules::default()),
            task,
            origin: "api".into(),
            resumed: false,
            tenant: tenant.map(str::to_owned),
        }
    }

    #[test]
    fn tenants_take_turns_and_one_at_its_quota_is_passed_over() {
        let quotas = HashMap::from([("a".to_owned(), 2), ("b".to_owned(), 1)]);
        let mut queue = FairQueue::new(quotas);
        for i in 0..10_000 {
            queue.push(job(&format!("a{i}"), Some("a")));
        }
        queue.push(job("b0", Some("b")));
        queue.push(job("b1", Some("b")));
        let first = queue.pop().unwrap();
        let second = queue.pop().unwrap();
        assert_eq!(
            (first.task.task_id.as_str(), second.task.task_id.as_str()),
            ("a0", "b0")
        );
        assert_eq!(queue.pop().unwrap().task.task_id, "a1");
        // a has 2 running (its quota), b 1 (its quota): nothing is ready.
        assert!(!queue.has_ready());
        assert!(queue.pop().is_none());
        queue.ended(&Some("b".into()));
        assert_eq!(queue.pop().unwrap().task.task_id, "b1");
        queue.ended(&Some("a".into()));
        assert_eq!(queue.pop().unwrap().task.task_id, "a2");
        assert_eq!(queue.len(), 9_997);
    }
}
