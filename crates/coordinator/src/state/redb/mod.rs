//! The state store on redb (`COORDINATOR_STATE_DIR/state.redb`), with group commit and a
//! write-ahead journal (`COORDINATOR_STATE_DIR/journal.log`, see [`super::journal`]).
//!
//! Every mutation goes to one writer thread, which takes all mutations waiting (up to
//! [`MAX_BATCH`]) as one batch: it appends the batch to the journal and syncs it, applies it to
//! the database in one write transaction that does not wait for the disk, then answers each
//! caller. A caller's future thus resolves only once its change is on disk, under load thousands
//! of changes share one sync, and a sync is one small sequential write. At most every second (and
//! on shutdown) a durable commit makes the database whole and the journal is emptied; on start,
//! batches journaled after the last such commit are applied again. Reads use redb's concurrent
//! read transactions directly.
//!
//! Layout: [`store`] is the [`RedbStore`] handle (reads, sending mutations), `open` how a state
//! directory is opened and checked, `writer` the group-commit thread, `reopen` how it recovers
//! from a failed write, `shared` what the handle and the writer share, `tables` the tables and how
//! one batch is applied to them.

mod open;
mod reopen;
mod shared;
pub mod store;
mod tables;
mod writer;

pub use open::DATABASE_FILE;
pub use store::RedbStore;
pub use writer::MAX_BATCH;
