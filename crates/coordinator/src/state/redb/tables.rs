//! The database's tables and how one journaled batch is applied to them in one transaction.

use super::super::callback::{Attempt, Callback};
use super::super::journal::{Batch, Change};
use super::super::timeline::{self, CancelOutcome, Cancellation, Step, TaskEvent};
use super::super::{API_ORIGIN, StateError, TaskRecord, TaskState};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use wasm_exec_task::{ErrorKind, ResultEnvelope, TaskSpec};

/// task_id -> JSON-encoded [`TaskRecord`].
pub(super) const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
/// state name -> number of tasks in it, kept in the same transactions as `TASKS`, so that
/// counting (metrics, probes) does not read every task.
pub(super) const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("counts");
/// Bookkeeping: [`JOURNAL_SEQ`] -> the number of the last journaled batch applied.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const JOURNAL_SEQ: &str = "journal_seq";
/// origin -> its read position (a source's opaque cursor), kept with the tasks it yielded.
pub(super) const CURSORS: TableDefinition<&str, &str> = TableDefinition::new("cursors");

/// Changes to the per-state counts within one batch, indexed like [`TaskState::ALL`].
pub(super) type Deltas = [i64; TaskState::ALL.len()];

pub(super) fn slot(state: TaskState) -> usize {
    TaskState::ALL.iter().position(|s| *s == state).unwrap_or(0)
}

/// What applying one change gave.
pub(super) enum Applied {
    Admitted(Vec<TaskSpec>),
    Done,
    Cancel(CancelOutcome),
}

/// What one batch did besides its outcomes: the count changes and the events to broadcast.
#[derive(Default)]
pub(super) struct Effects {
    pub(super) deltas: Deltas,
    pub(super) events: Vec<TaskEvent>,
}

pub(super) fn err(e: impl std::fmt::Display) -> StateError {
    StateError(e.to_string())
}

pub(super) fn decode(bytes: &[u8]) -> Result<TaskRecord, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError(format!("corrupt task record: {e}")))
}

/// The batch number the database has applied (0 for a new one).
pub(super) fn applied_seq(db: &Database) -> Result<u64, StateError> {
    let txn = db.begin_read().map_err(err)?;
    match txn.open_table(META) {
        Ok(meta) => Ok(meta.get(JOURNAL_SEQ).map_err(err)?.map_or(0, |v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(err(e)),
    }
}

/// What a committed batch gave: each change's outcome, and the events to broadcast.
pub(super) type Committed = (Vec<Result<Applied, StateError>>, Vec<TaskEvent>);

/// Applies batch `seq` in one transaction, durable or not, and returns each change's outcome
/// and the events (an error for all if the commit failed).
pub(super) fn commit(
    db: &Database,
    seq: u64,
    batch: &Batch,
    durable: bool,
) -> Result<Committed, StateError> {
    let mut txn = db.begin_write().map_err(err)?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(err)?;
    let mut outcomes = Vec::with_capacity(batch.changes.len());
    let mut effects = Effects::default();
    {
        let mut table = txn.open_table(TASKS).map_err(err)?;
        for change in &batch.changes {
            outcomes.push(apply(&mut table, change, batch.at_ms, &mut effects));
        }
        let cursors = batch.changes.iter().filter_map(|c| match c {
            Change::Admit {
                origin,
                cursor: Some(cursor),
                ..
            } => Some((origin, cursor)),
            _ => None,
        });
        let mut cursor_table = None;
        for (origin, cursor) in cursors {
            let table = match &mut cursor_table {
                Some(table) => table,
                None => cursor_table.insert(txn.open_table(CURSORS).map_err(err)?),
            };
            table
                .insert(origin.as_str(), cursor.as_str())
                .map_err(err)?;
        }
        drop(cursor_table);
        let mut counts = txn.open_table(COUNTS).map_err(err)?;
        apply_deltas(&mut counts, &effects.deltas)?;
        let mut meta = txn.open_table(META).map_err(err)?;
        meta.insert(JOURNAL_SEQ, seq).map_err(err)?;
    }
    txn.commit().map_err(err)?;
    Ok((outcomes, effects.events))
}

/// Applies one change to the tasks table.
fn apply(
    table: &mut Table<'_>,
    change: &Change,
    now: u64,
    fx: &mut Effects,
) -> Result<Applied, StateError> {
    match change {
        Change::Admit { tasks, origin, .. } => {
            admit(table, tasks, origin, now, fx).map(Applied::Admitted)
        }
        Change::Submit {
            tasks,
            callbacks,
            tenant,
        } => submit(table, tasks, callbacks, tenant.as_deref(), now, fx).map(Applied::Admitted),
        Change::Delivery { id, attempt } => {
            deliver(table, id, attempt, now).map(|()| Applied::Done)
        }
        Change::Progress { id, state } => {
            let outcome = update(table, id, now, fx, |r| {
                if r.state.is_finished() {
                    return;
                }
                if *state == TaskState::Running {
                    r.attempts += 1;
                }
                r.state = *state;
            });
            if let Err(e) = &outcome {
                tracing::warn!(task_id = %id, error = %e, "could not record a task's progress");
            }
            outcome.map(|()| Applied::Done)
        }
        Change::Finish {
            id,
            result,
            reported,
        } => update(table, id, now, fx, |r| {
            if r.state == TaskState::Cancelled {
                return; // a run that ended after its cancel: the cancel stands
            }
            r.reported |= *reported;
            r.state = if result.ok {
                TaskState::Succeeded
            } else {
                TaskState::Failed
            };
            r.result = Some((**result).clone());
        })
        .map(|()| Applied::Done),
        Change::Quarantine { id, result } => update(table, id, now, fx, |r| {
            if !r.state.is_finished() {
                r.state = TaskState::Quarantined;
                r.result = Some((**result).clone());
            }
        })
        .map(|()| Applied::Done),
        Change::Reported { id, note } => update(table, id, now, fx, |r| {
            r.reported = true;
            r.not_written_back.clone_from(note);
        })
        .map(|()| Applied::Done),
        Change::Cancel { id, by } => cancel(table, id, by, now, fx).map(Applied::Cancel),
    }
}

/// Cancels an unfinished task: state `cancelled`, a `cancelled_by_request` result naming who
/// and when; an API task's result needs no write-back. A task that ended is left untouched.
fn cancel(
    table: &mut Table<'_>,
    task_id: &str,
    by: &str,
    now: u64,
    fx: &mut Effects,
) -> Result<CancelOutcome, StateError> {
    let was = match table.get(task_id).map_err(err)? {
        Some(value) => decode(value.value())?.state,
        None => return Err(StateError(format!("unknown task \"{task_id}\""))),
    };
    if was.is_finished() {
        return Ok(CancelOutcome::AlreadyEnded(was));
    }
    update(table, task_id, now, fx, |r| {
        r.state = TaskState::Cancelled;
        r.reported = r.origin == API_ORIGIN;
        r.result = Some(ResultEnvelope::failure(
            ErrorKind::CancelledByRequest,
            format!(
                "cancelled by {by} at {now} ms (Unix time) while {}",
                was.as_str()
            ),
        ));
        r.cancelled = Some(Cancellation {
            by: by.to_owned(),
            at_ms: now,
        });
    })?;
    Ok(CancelOutcome::Cancelled { was })
}

type Table<'t> = redb::Table<'t, &'static str, &'static [u8]>;

/// Admits API tasks of `tenant`, then gives each fresh one its tenant and its callback.
fn submit(
    table: &mut Table<'_>,
    tasks: &[TaskSpec],
    callbacks: &BTreeMap<String, String>,
    tenant: Option<&str>,
    now: u64,
    fx: &mut Effects,
) -> Result<Vec<TaskSpec>, StateError> {
    let first_event = fx.events.len();
    let fresh = admit(table, tasks, API_ORIGIN, now, fx)?;
    for event in &mut fx.events[first_event..] {
        event.tenant = tenant.map(str::to_owned);
    }
    for task in &fresh {
        let url = callbacks.get(&task.task_id);
        if url.is_none() && tenant.is_none() {
            continue;
        }
        let mut record = match table.get(task.task_id.as_str()).map_err(err)? {
            Some(value) => decode(value.value())?,
            None => return Err(StateError(format!("unknown task \"{}\"", task.task_id))),
        };
        record.callback = url.map(|url| Callback::new(url.clone()));
        record.tenant = tenant.map(str::to_owned);
        let bytes = serde_json::to_vec(&record).map_err(err)?;
        table
            .insert(task.task_id.as_str(), bytes.as_slice())
            .map_err(err)?;
    }
    Ok(fresh)
}

/// Records one delivery attempt of a task's webhook. Its state is unchanged, so no event is
/// broadcast (the deliverer listens to events for tasks that end).
fn deliver(
    table: &mut Table<'_>,
    task_id: &str,
    attempt: &Attempt,
    now: u64,
) -> Result<(), StateError> {
    let mut record = match table.get(task_id).map_err(err)? {
        Some(value) => decode(value.value())?,
        None => return Err(StateError(format!("unknown task \"{task_id}\""))),
    };
    let Some(callback) = &mut record.callback else {
        return Err(StateError(format!("task \"{task_id}\" has no callback")));
    };
    callback.record(attempt, now);
    let bytes = serde_json::to_vec(&record).map_err(err)?;
    table.insert(task_id, bytes.as_slice()).map_err(err)?;
    Ok(())
}

/// Adds a batch's count changes to the counts table.
pub(super) fn apply_deltas(
    counts: &mut redb::Table<'_, &'static str, u64>,
    deltas: &Deltas,
) -> Result<(), StateError> {
    for (state, delta) in TaskState::ALL.iter().zip(deltas) {
        if *delta == 0 {
            continue;
        }
        let current = counts
            .get(state.as_str())
            .map_err(err)?
            .map_or(0, |v| v.value());
        let next = current.saturating_add_signed(*delta);
        counts.insert(state.as_str(), next).map_err(err)?;
    }
    Ok(())
}

fn admit(
    table: &mut Table<'_>,
    tasks: &[TaskSpec],
    origin: &str,
    now: u64,
    fx: &mut Effects,
) -> Result<Vec<TaskSpec>, StateError> {
    let mut fresh = Vec::new();
    for task in tasks {
        if table.get(task.task_id.as_str()).map_err(err)?.is_some() {
            continue;
        }
        let record = TaskRecord {
            task: task.clone(),
            origin: origin.to_owned(),
            state: TaskState::Pending,
            attempts: 0,
            reported: false,
            created_at_ms: now,
            updated_at_ms: now,
            result: None,
            not_written_back: None,
            timeline: vec![Step {
                at_ms: now,
                state: TaskState::Pending,
                attempt: 0,
            }],
            cancelled: None,
            tenant: None,
            callback: None,
        };
        let bytes = serde_json::to_vec(&record).map_err(err)?;
        table
            .insert(task.task_id.as_str(), bytes.as_slice())
            .map_err(err)?;
        fx.deltas[slot(TaskState::Pending)] += 1;
        fx.events.push(TaskEvent {
            task_id: task.task_id.clone(),
            state: TaskState::Pending,
            attempts: 0,
            at_ms: now,
            tenant: None,
        });
        fresh.push(task.clone());
    }
    Ok(fresh)
}

fn update(
    table: &mut Table<'_>,
    task_id: &str,
    now: u64,
    fx: &mut Effects,
    change: impl FnOnce(&mut TaskRecord),
) -> Result<(), StateError> {
    let mut record = match table.get(task_id).map_err(err)? {
        Some(value) => decode(value.value())?,
        None => return Err(StateError(format!("unknown task \"{task_id}\""))),
    };
    let (before, attempts) = (record.state, record.attempts);
    change(&mut record);
    fx.deltas[slot(before)] -= 1;
    fx.deltas[slot(record.state)] += 1;
    if record.state != before || record.attempts != attempts {
        let step = Step {
            at_ms: now,
            state: record.state,
            attempt: record.attempts,
        };
        timeline::record(&mut record.timeline, step);
    }
    fx.events.push(TaskEvent {
        task_id: task_id.to_owned(),
        state: record.state,
        attempts: record.attempts,
        at_ms: now,
        tenant: record.tenant.clone(),
    });
    record.updated_at_ms = now;
    let bytes = serde_json::to_vec(&record).map_err(err)?;
    table.insert(task_id, bytes.as_slice()).map_err(err)?;
    Ok(())
}
