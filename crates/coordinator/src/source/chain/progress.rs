//! Where tasks stand on chain, read for many tasks in one call: each read this operator makes of
//! a task (at intake, before writing, after its commit, and on every new head while its reveal
//! waits) waits up to [`LINGER`] for others and goes out with them in one `progressOf` call.
//! A thousand reveals waiting on one head cost a few calls, not a thousand `getTask` and a
//! thousand block reads.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use wasm_exec_chain::{Address, DynProvider, Registry, TaskRegistry, U256};

/// Longest a read waits for others to go with it.
const LINGER: Duration = Duration::from_millis(5);
/// Most tasks in one call (each reads about seven storage slots; well under a node's gas cap for
/// `eth_call`).
const MAX_IDS: usize = 256;
/// Most reads waiting to be gathered; an asker waits for room beyond that.
const QUEUE: usize = 4096;

/// Where one task stands: the registry's [`TaskRegistry::Progress`] and the block's time.
#[derive(Debug, Clone)]
pub(super) struct Progress {
    /// Status, replication, windows, limits, request, and this executor's part.
    pub(super) task: TaskRegistry::Progress,
    /// The timestamp of the block read, in unix seconds (the clock of windows and deadlines).
    pub(super) time: u64,
}

/// One read waiting: the task, and who waits for its answer.
struct Asked {
    id: U256,
    done: oneshot::Sender<Result<Progress, String>>,
}

/// Reads tasks' progress for one executor, many in one call.
pub(super) struct ProgressReader {
    queue: mpsc::Sender<Asked>,
    gatherer: tokio::task::JoinHandle<()>,
}

impl Drop for ProgressReader {
    fn drop(&mut self) {
        self.gatherer.abort();
    }
}

impl ProgressReader {
    /// A reader of `registry` for `executor`'s part. Must be called within a Tokio runtime.
    pub(super) fn new(registry: Registry<DynProvider>, executor: Address) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let gatherer = tokio::spawn(gather(Arc::new(registry), executor, waiting));
        Self { queue, gatherer }
    }

    /// Where task `id` stands now (with the reads waiting alongside it); the node's error as text.
    pub(super) async fn read(&self, id: U256) -> Result<Progress, String> {
        let stopped = || "the progress reader has stopped".to_string();
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Asked { id, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Gathers waiting reads into calls of at most [`MAX_IDS`] tasks, each call on a task of its
/// own so that a slow node never holds the queue.
async fn gather(
    registry: Arc<Registry<DynProvider>>,
    executor: Address,
    mut waiting: mpsc::Receiver<Asked>,
) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < MAX_IDS {
            tokio::select! {
                next = waiting.recv() => match next {
                    Some(next) => batch.push(next),
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        tokio::spawn(call(registry.clone(), executor, batch));
    }
}

/// One `progressOf` call for `batch`, answering each read.
async fn call(registry: Arc<Registry<DynProvider>>, executor: Address, batch: Vec<Asked>) {
    let ids: Vec<U256> = batch.iter().map(|a| a.id).collect();
    match registry.progressOf(ids, executor).call().await {
        Ok(read) if read.list.len() == batch.len() => {
            let time = read.time.saturating_to::<u64>();
            for (asked, task) in batch.into_iter().zip(read.list) {
                let _ = asked.done.send(Ok(Progress { task, time }));
            }
        }
        Ok(read) => {
            let why = format!(
                "progressOf answered {} tasks for {} asked",
                read.list.len(),
                batch.len()
            );
            answer_all(batch, &why);
        }
        Err(e) => answer_all(batch, &format!("reading the tasks' progress: {e}")),
    }
}

/// Answers every read of `batch` with `error`.
fn answer_all(batch: Vec<Asked>, error: &str) {
    for asked in batch {
        let _ = asked.done.send(Err(error.to_string()));
    }
}
