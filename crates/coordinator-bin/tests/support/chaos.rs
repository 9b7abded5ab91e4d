//! The chaos campaign's moving parts: the coordinator killed and restarted on the same state
//! directory and port, a careful client's submission loop, the plan of kills and faults, and the
//! tasks with the values they must give.

use crate::support::Service;
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasm_exec_coordinator::source::placeholder::{ADD_CID, AFFINE_CID, FIB_CID};
use wasm_exec_test_peers::http::{try_get, try_post};

/// A fault injected between two kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Episode {
    /// anvil stopped with SIGTERM (its `--state` kept), down 2 s, started again.
    AnvilRestart,
    /// js-ipfs stopped, down 3 s, started again on the same repository and ports.
    IpfsOutage,
    /// The state tmpfs filled to the last byte for 3 s, then freed.
    DiskFull,
}

/// One step of the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGKILL the coordinator and start it again.
    Kill,
    /// Inject a fault.
    Fault(Episode),
}

/// The campaign's steps, each with the count of finished tasks it waits for, ascending: kills
/// at moments drawn uniformly over the run, and each kind of fault once per 25 kills (at least
/// once), at evenly spread moments, so that every fault falls between kills and meets load.
pub fn schedule(rng: &mut fastrand::Rng, kills: usize, tasks: usize) -> Vec<(usize, Event)> {
    let mut plan: Vec<(usize, Event)> = (0..kills)
        .map(|_| (rng.usize(0..tasks.max(1)), Event::Kill))
        .collect();
    let kinds = [
        Episode::AnvilRestart,
        Episode::IpfsOutage,
        Episode::DiskFull,
    ];
    let slots = kills.div_ceil(25).max(1) * kinds.len();
    plan.extend((0..slots).map(|s| {
        let at = (s + 1) * tasks / (slots + 2);
        (at, Event::Fault(kinds[s % kinds.len()]))
    }));
    plan.sort_by_key(|(at, _)| *at);
    plan
}

/// What one task computes and the value it must give, drawn from the seed and its index.
pub struct Work {
    /// The sample's CID (CIDv1, as js-ipfs adds it with raw leaves).
    pub cid: &'static str,
    /// Its entry.
    pub entry: &'static str,
    /// Its arguments.
    pub args: Vec<u64>,
    /// The result it must give.
    pub expected: u64,
}

impl Work {
    /// Task `index` of the campaign seeded with `seed`: add, fib or affine in turn.
    pub fn of(seed: u64, index: usize) -> Work {
        let mut rng = fastrand::Rng::with_seed(seed ^ (index as u64).wrapping_mul(0x9e37_79b9));
        match index % 3 {
            0 => {
                let (a, b) = (rng.u64(0..1_000_000), rng.u64(0..1_000_000));
                Work {
                    cid: ADD_CID,
                    entry: "add",
                    args: vec![a, b],
                    expected: a + b,
                }
            }
            1 => {
                let n = rng.u64(0..60);
                let expected = (0..n).fold((0u64, 1u64), |(a, b), _| (b, a + b)).0;
                Work {
                    cid: FIB_CID,
                    entry: "fib",
                    args: vec![n],
                    expected,
                }
            }
            _ => {
                let (a, b, x) = (rng.u64(0..1000), rng.u64(0..1000), rng.u64(0..1000));
                Work {
                    cid: AFFINE_CID,
                    entry: "affine",
                    args: vec![a, b, x],
                    expected: a * x + b,
                }
            }
        }
    }
}

/// What the clients saw, counted across their threads.
#[derive(Default)]
pub struct Tally {
    /// Tasks acknowledged (API 201/200, chain receipt).
    pub acked: AtomicUsize,
    /// Tasks finished, as the coordinator's `/metrics` last said.
    pub finished: AtomicUsize,
    /// Set during a disk-full episode: the clients then submit without waiting for room, so
    /// that the full disk meets submissions.
    pub pressing: AtomicBool,
    acked_api: AtomicUsize,
    resent: AtomicUsize,
    /// Chain submissions sent again after an error (a node restart).
    pub chain_resent: AtomicUsize,
    refused: AtomicUsize,
    fresh_again: AtomicUsize,
}

impl Tally {
    /// Submits `body` as a careful client does: on a connection error, a timeout or a 5xx it
    /// sends the same body again until the answer is 201, 200 or 409. `again` marks a deliberate
    /// second submission of an acknowledged task (its answer must not be 201). True when
    /// acknowledged; a 409 or any other answer fails the campaign.
    pub fn submit(&self, base: &str, body: &str, again: bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut first = !again;
        loop {
            if !first {
                self.resent.fetch_add(1, Ordering::SeqCst);
            }
            first = false;
            match try_post(base, "/v1/tasks", body, Duration::from_secs(10)) {
                Ok(reply) if reply.status == 201 || reply.status == 200 => {
                    if again && reply.status == 201 {
                        self.fresh_again.fetch_add(1, Ordering::SeqCst);
                    }
                    if !again {
                        self.acked_api.fetch_add(1, Ordering::SeqCst);
                    }
                    return true;
                }
                Ok(reply) if reply.status >= 500 => {
                    if reply.status == 503 {
                        self.refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Ok(reply) => panic!(
                    "submission answered {}: {:?} for {body}",
                    reply.status, reply.body
                ),
                Err(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "no answer to a submission for 180 s: {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits while more than `window` acknowledged tasks are unfinished, so that submissions go
    /// on through the whole run instead of racing ahead of it; returns early once `stop` is set.
    pub fn wait_for_room(&self, window: usize, stop: &AtomicBool) {
        while self.acked.load(Ordering::SeqCst) > self.finished.load(Ordering::SeqCst) + window
            && !stop.load(Ordering::SeqCst)
            && !self.pressing.load(Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `count` tasks are finished; false if no task finished for `stall`.
    pub fn wait_finished(&self, count: usize, stall: Duration) -> bool {
        let (mut last, mut since) = (self.finished.load(Ordering::SeqCst), Instant::now());
        loop {
            let now = self.finished.load(Ordering::SeqCst);
            if now >= count {
                return true;
            }
            if now != last {
                (last, since) = (now, Instant::now());
            }
            if since.elapsed() > stall {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Reads the finished count from the coordinator's `/metrics` (`wasm_exec_tasks{state}`)
    /// every 50 ms until `stop` is set; an unreachable coordinator keeps the last count.
    pub fn watch(&self, base: &str, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            // Not while the store cannot count (it answers 500 while a full disk has writes fail).
            if let Ok(reply) = try_get(base, "/metrics", Duration::from_secs(5)).and_then(|r| {
                if r.status == 200 {
                    Ok(r)
                } else {
                    Err(r.status.to_string())
                }
            }) {
                let text = reply.body.as_str().unwrap_or_default().to_owned();
                let finished = ["succeeded", "failed", "quarantined"]
                    .iter()
                    .filter_map(|state| {
                        let name = format!("wasm_exec_tasks{{state=\"{state}\"}} ");
                        text.lines()
                            .find_map(|l| l.strip_prefix(&name))
                            .and_then(|n| n.trim().parse::<usize>().ok())
                    })
                    .sum();
                self.finished.fetch_max(finished, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// API tasks acknowledged.
    pub fn acked_api(&self) -> usize {
        self.acked_api.load(Ordering::SeqCst)
    }

    /// Submissions sent again with the same id (after an error, or deliberately).
    pub fn resent(&self) -> usize {
        self.resent.load(Ordering::SeqCst)
    }

    /// Answers 503 (a full disk, the watermark).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// Second submissions of an acknowledged task answered 201: the first was lost.
    pub fn fresh_again(&self) -> usize {
        self.fresh_again.load(Ordering::SeqCst)
    }
}

/// Sets its flag when dropped: the campaign's helper threads stop even when it panics.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What the campaign counts in the coordinator's logs, per task id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Logged {
    /// `module ready`: a run about to begin on the backend.
    RunBegun,
    /// `result written on chain`: a write-back transaction that landed.
    WrittenBack,
    /// `the result was already on chain`: a second report that found the first one done.
    AlreadyOnChain,
}

impl Logged {
    const ALL: [Logged; 3] = [
        Logged::RunBegun,
        Logged::WrittenBack,
        Logged::AlreadyOnChain,
    ];

    fn marker(self) -> &'static str {
        match self {
            Logged::RunBegun => "module ready",
            Logged::WrittenBack => "result written on chain",
            Logged::AlreadyOnChain => "the result was already on chain",
        }
    }
}

/// Counts per kind of line and task id.
pub type LogCounts = HashMap<Logged, HashMap<String, usize>>;

/// The coordinator under test, SIGKILLed and started again on the same state directory and
/// port; what every incarnation logged is counted.
pub struct Coordinator {
    service: Option<Service>,
    base: String,
    /// What the ended incarnations logged.
    counts: LogCounts,
    /// SIGKILLs sent.
    pub kills: usize,
    /// Exits that no kill caused: the status and the end of that incarnation's log.
    pub exits: Vec<String>,
}

impl Coordinator {
    /// Starts the first incarnation.
    pub fn start(cmd: Command) -> Coordinator {
        let service = Service::start(cmd);
        Coordinator {
            base: service.base.clone(),
            service: Some(service),
            counts: LogCounts::new(),
            kills: 0,
            exits: Vec::new(),
        }
    }

    /// Its API base (the same port in every incarnation).
    pub fn base(&self) -> String {
        self.base.clone()
    }

    /// SIGKILL, `down` without a coordinator, then a new incarnation from `cmd`.
    pub fn kill_and_restart(&mut self, cmd: Command, down: Duration) {
        if let Some(service) = self.service.take() {
            count_lines(&service.kill_and_drain(), &mut self.counts);
            self.kills += 1;
        }
        std::thread::sleep(down);
        self.service = Some(Service::start(cmd));
    }

    /// If the coordinator ended by itself, records why and starts it again from `cmd`, as an
    /// orchestrator would.
    pub fn restart_if_exited(&mut self, cmd: Command) {
        let Some(service) = self.service.as_mut() else {
            return;
        };
        let Some(status) = service.exited() else {
            return;
        };
        let log = self
            .service
            .take()
            .map(Service::kill_and_drain)
            .unwrap_or_default();
        count_lines(&log, &mut self.counts);
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        self.exits.push(format!("{status}: {tail:?}"));
        self.service = Some(Service::start(cmd));
    }

    /// The counts over every incarnation, the running one's log included so far.
    pub fn logged(&self) -> LogCounts {
        let mut counts = self.counts.clone();
        if let Some(service) = &self.service {
            count_lines(&service.log.lock().expect("the log"), &mut counts);
        }
        counts
    }
}

/// Adds one per line of each [`Logged`] kind to its task id's count.
fn count_lines(log: &str, counts: &mut LogCounts) {
    for line in log.lines() {
        let Some(kind) = Logged::ALL.into_iter().find(|k| line.contains(k.marker())) else {
            continue;
        };
        if let Some(id) = line
            .split("task_id=")
            .nth(1)
            .and_then(|r| r.split([' ', '}']).next())
        {
            *counts
                .entry(kind)
                .or_default()
                .entry(id.to_owned())
                .or_default() += 1;
        }
    }
}

/// Every task id the API lists in `state` (following `next`).
pub fn listed(base: &str, state: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/v1/tasks?state={state}&limit=1000&after={after}");
        let Ok(reply) = try_get(base, &path, Duration::from_secs(10)) else {
            return ids;
        };
        let tasks = reply.body["tasks"].as_array().cloned().unwrap_or_default();
        ids.extend(
            tasks
                .iter()
                .filter_map(|t| t["task_id"].as_str().map(str::to_owned)),
        );
        match reply.body["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return ids,
        }
    }
}
