//! The coordinator's configuration: the seed's variables and ours, each an env var and a flag.

use crate::edge::EdgeLimits;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;
use wasm_exec_task::limits;

/// The wasm-exec coordinator: takes tasks from a source, fetches their modules by CID with
/// verification, runs them on a backend and writes each result back.
#[derive(Debug, Clone, Parser)]
#[command(name = "coordinator", version)]
pub struct Config {
    /// Take every task the source has now, run them, print a table and exit (non-zero if any
    /// failed), instead of serving until stopped.
    #[arg(long)]
    pub once: bool,

    /// Where tasks come from: `placeholder` (the samples, or `COORDINATOR_TASKS_FILE`) or
    /// `chain` (a TaskRegistry contract; results written back on chain).
    #[arg(long, env = "COORDINATOR_TASK_SOURCE", value_enum, default_value_t = SourceKind::Placeholder)]
    pub task_source: SourceKind,

    /// The chain source's settings (also used by `coordinator chain ...`).
    #[command(flatten)]
    pub chain: ChainArgs,

    /// The webhooks' key and retries.
    #[command(flatten)]
    pub webhook: crate::webhooks::WebhookArgs,

    /// A chain command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Where tasks run: `local` (in-process, the default) or `kubernetes` (one Job per task).
    #[arg(long, env = "COORDINATOR_BACKEND", value_enum, default_value_t = BackendKind::Local)]
    pub backend: BackendKind,

    /// Most tasks in flight at once (1 = the seed's sequential mode).
    #[arg(long, env = "COORDINATOR_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,

    /// MiB of finished results kept to answer identical tasks (same module bytes, entry, input
    /// and limits) without running them; 0 turns the result cache off. A task can opt out with
    /// `"cache": false`.
    #[arg(long, env = "COORDINATOR_RESULT_CACHE_MB", default_value_t = 64)]
    pub result_cache_mb: usize,

    /// A JSON file of tasks to use instead of the built-in samples add / fib / affine.
    #[arg(long, env = "COORDINATOR_TASKS_FILE")]
    pub tasks_file: Option<PathBuf>,

    /// A file where the placeholder source also writes each result back, one JSON line per
    /// task, durably and exactly once (a task already in the file is not written again).
    #[arg(long, env = "COORDINATOR_RESULTS_FILE")]
    pub results_file: Option<PathBuf>,

    /// Local directory of modules, found by CID (of their bytes) or by file name.
    #[arg(long, env = "COORDINATOR_IPFS_MIRROR", default_value = "./host/wasm")]
    pub ipfs_mirror: PathBuf,

    /// IPFS HTTP gateway, e.g. `http://127.0.0.1:18480/ipfs`; when unset, the local mirror is used.
    #[arg(long, env = "COORDINATOR_IPFS_ENDPOINT")]
    pub ipfs_endpoint: Option<String>,

    /// Time for one gateway request, body included, in seconds.
    #[arg(long, env = "COORDINATOR_IPFS_TIMEOUT_SEC", default_value_t = 30)]
    pub ipfs_timeout_sec: u64,

    /// Time to connect to the gateway, in seconds.
    #[arg(
        long,
        env = "COORDINATOR_IPFS_CONNECT_TIMEOUT_SEC",
        default_value_t = 5
    )]
    pub ipfs_connect_timeout_sec: u64,

    /// Retries of a gateway request after a 5xx, a timeout or a connection error (backoff from
    /// 200 ms, doubling); 4xx answers are not retried.
    #[arg(long, env = "COORDINATOR_IPFS_RETRIES", default_value_t = 3)]
    pub ipfs_retries: u32,

    /// Largest module accepted, fetched or uploaded (`POST /v1/modules`'s body cap), in MiB.
    #[arg(long, env = "COORDINATOR_MAX_MODULE_MB", default_value_t = 32)]
    pub max_module_mb: u64,

    /// Directory of the state database (every task, its state and result), created if missing.
    #[arg(
        long,
        env = "COORDINATOR_STATE_DIR",
        default_value = "./coordinator-state"
    )]
    pub state_dir: PathBuf,

    /// File holding the key that signs every finished task's receipt (`GET
    /// /v1/tasks/{id}/receipt`; hex, one line; mode 600). Unset: the chain key
    /// (`COORDINATOR_CHAIN_KEY_FILE`) when there is one, else `receipt.key` in the state
    /// directory, made on the first start (its address is logged).
    #[arg(long, env = "COORDINATOR_RECEIPT_KEY_FILE")]
    pub receipt_key_file: Option<PathBuf>,

    /// Free space of the state directory's filesystem, in MiB, below which submissions are
    /// answered 503 with Retry-After (before the disk is full, not after).
    #[arg(
        long,
        env = "COORDINATOR_STATE_LOW_WATERMARK_MB",
        default_value_t = 128
    )]
    pub state_low_watermark_mb: u64,

    /// Starts without a finish (the process died while the task ran) after which a task is
    /// quarantined with kind `crashed` instead of run again; 0 never quarantines.
    #[arg(long, env = "COORDINATOR_QUARANTINE_AFTER", default_value_t = 3)]
    pub quarantine_after: u32,

    /// Compile modules in a child process of this binary, killed when the task's time runs out
    /// and limited to `COORDINATOR_COMPILE_MEMORY_MB`. `false` compiles in the worker thread,
    /// where nothing bounds a compile's time or memory but the module shape check.
    #[arg(long, env = "COORDINATOR_COMPILE_IN_CHILD", default_value_t = true, action = clap::ArgAction::Set)]
    pub compile_in_child: bool,

    /// Address space one compiler child process may use, in MiB; a compile needing more ends
    /// its task with `out_of_memory`.
    #[arg(long, env = "COORDINATOR_COMPILE_MEMORY_MB", default_value_t = 1024)]
    pub compile_memory_mb: u64,

    /// Directory for fetched modules (by CID, re-verified when read) and compiled code (optional).
    #[arg(long, env = "COORDINATOR_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Default wall-clock limit of a task, in seconds (a task's `limits.timeout_sec` wins).
    #[arg(long, env = "TIMEOUT_SEC", default_value_t = limits::DEFAULT_TIMEOUT_SEC)]
    pub timeout_sec: f64,

    /// Default linear-memory limit of a task, in MiB (a task's `limits.max_memory_mb` wins).
    #[arg(long, env = "MAX_MEMORY_MB", default_value_t = limits::DEFAULT_MEMORY_MB)]
    pub max_memory_mb: u64,

    /// Default bytes of a guest's stdout, and of its stderr, kept in its result (a task's
    /// `limits.max_output_bytes` wins).
    #[arg(long, env = "MAX_OUTPUT_BYTES", default_value_t = limits::DEFAULT_OUTPUT_BYTES)]
    pub max_output_bytes: u64,

    /// The longest wall-clock limit a task may ask for, in seconds; a task over it is refused
    /// at intake (`bad_input` naming this maximum).
    #[arg(
        long,
        env = "COORDINATOR_MAX_TASK_TIMEOUT_SEC",
        default_value_t = 300.0
    )]
    pub max_task_timeout_sec: f64,

    /// The largest memory budget a task may ask for, in MiB (every memory and table together).
    #[arg(long, env = "COORDINATOR_MAX_TASK_MEMORY_MB", default_value_t = 1024)]
    pub max_task_memory_mb: u64,

    /// The largest instruction budget a task may ask for (unset: no cap; fuel only ever
    /// shortens a run).
    #[arg(long, env = "COORDINATOR_MAX_TASK_FUEL")]
    pub max_task_fuel: Option<u64>,

    /// The most bytes of stdout, and of stderr, a task may ask to keep.
    #[arg(long, env = "COORDINATOR_MAX_TASK_OUTPUT_BYTES", default_value_t = 16 << 20)]
    pub max_task_output_bytes: u64,

    /// The largest input document a task may carry, in bytes of JSON.
    #[arg(long, env = "COORDINATOR_MAX_TASK_INPUT_BYTES", default_value_t = 1 << 20)]
    pub max_task_input_bytes: usize,

    /// Address of the HTTP API (always on); port 0 picks a free port (logged at start).
    #[arg(long, env = "COORDINATOR_LISTEN", default_value = "127.0.0.1:18080")]
    pub listen: String,

    /// Bearer token every API request but `/healthz` and `/readyz` must carry; unset: no token.
    #[arg(long, env = "COORDINATOR_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Tenants and their API tokens (JSON: `{"tenants": [{"tenant", "concurrency",
    /// "tasks_per_minute"?, "webhook_secret"?, "tokens": [{"name", "sha256"}]}]}`, only the
    /// SHA-256 of each token; `coordinator token new` draws one). Unset: no tenants.
    #[arg(long, env = "COORDINATOR_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Largest API request body, in KiB (413 beyond).
    #[arg(long, env = "COORDINATOR_MAX_BODY_KB", default_value_t = 1024)]
    pub max_body_kb: usize,

    /// Seconds a client gets, from its connection's accept (or its last response), to send a
    /// whole request head; then it is disconnected.
    #[arg(long, env = "COORDINATOR_HTTP_HEADER_TIMEOUT_SEC", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout_sec: u64,

    /// Seconds a request's whole body gets to arrive after its head; a slower one is refused
    /// (400 naming this setting) and its connection closed.
    #[arg(long, env = "COORDINATOR_HTTP_BODY_TIMEOUT_SEC", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_body_timeout_sec: u64,

    /// Seconds a connection may go without a byte read or written (a client that stops reading
    /// its response) before it is closed.
    #[arg(long, env = "COORDINATOR_HTTP_IDLE_TIMEOUT_SEC", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_idle_timeout_sec: u64,

    /// Most API connections open at once; further clients wait in the listen backlog until one
    /// closes. Lowered at start (and logged) to leave 256 file descriptors for the rest.
    #[arg(long, env = "COORDINATOR_HTTP_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_max_connections: u64,

    /// Kubernetes namespace for Jobs and ConfigMaps (kubernetes backend).
    #[arg(long, env = "COORDINATOR_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Executor image the Jobs run (kubernetes backend).
    #[arg(
        long,
        env = "COORDINATOR_EXECUTOR_IMAGE",
        default_value = "executor-demo/executor:demo"
    )]
    pub executor_image: String,

    /// Job template (kubernetes backend).
    #[arg(long, env = "COORDINATOR_JOB_TEMPLATE", default_value = "k8s/job.yaml")]
    pub job_template: PathBuf,

    /// Seconds running tasks get to finish after SIGINT/SIGTERM.
    #[arg(long, env = "COORDINATOR_SHUTDOWN_GRACE_SEC", default_value_t = 30)]
    pub shutdown_grace_sec: u64,

    /// Log format: `text` for people, `json` for machines.
    #[arg(long, env = "COORDINATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// Whether the API asks for a token (`COORDINATOR_API_TOKEN` or `COORDINATOR_TOKENS_FILE`).
    pub fn auth(&self) -> bool {
        self.api_token.is_some() || self.tokens_file.is_some()
    }

    /// The HTTP edge's limits, the connection cap fitted under the descriptor limit `fd_limit`
    /// (the soft `RLIMIT_NOFILE`; `None`: unlimited).
    pub fn edge_limits(&self, fd_limit: Option<u64>) -> EdgeLimits {
        let wanted = usize::try_from(self.http_max_connections).unwrap_or(usize::MAX);
        EdgeLimits {
            header_timeout: Duration::from_secs(self.http_header_timeout_sec),
            body_timeout: Duration::from_secs(self.http_body_timeout_sec),
            idle_timeout: Duration::from_secs(self.http_idle_timeout_sec),
            max_connections: crate::fd_limit::fit_connections(wanted, fd_limit),
        }
    }
}

/// The chain: node, registry, key, and how to read and write.
#[derive(Debug, Clone, Args)]
pub struct ChainArgs {
    /// The node's JSON-RPC URL: `http(s)://` (new blocks polled every COORDINATOR_CHAIN_POLL_MS)
    /// or `ws(s)://` (new blocks pushed by the node over one socket, reopened when it drops).
    #[arg(
        long,
        env = "COORDINATOR_CHAIN_RPC_URL",
        default_value = "http://127.0.0.1:8545",
        global = true
    )]
    pub chain_rpc_url: String,

    /// Over http(s): milliseconds between asking for new blocks once caught up (reads and receipt
    /// checks follow them). Unused over ws(s), where the node pushes them.
    #[arg(
        long,
        env = "COORDINATOR_CHAIN_POLL_MS",
        default_value_t = 500,
        global = true
    )]
    pub chain_poll_ms: u64,

    /// The TaskRegistry's address (`coordinator chain deploy` prints one).
    #[arg(long, env = "COORDINATOR_CONTRACT_ADDRESS", global = true)]
    pub contract_address: Option<String>,

    /// The chain id the node must report (31337 for anvil); checked at start.
    #[arg(long, env = "COORDINATOR_CHAIN_ID", global = true)]
    pub chain_id: Option<u64>,

    /// File holding the account's private key (hex, one line; mode 600). The executor's key
    /// when serving; the owner's or a requester's for `coordinator chain ...`.
    #[arg(long, env = "COORDINATOR_CHAIN_KEY_FILE", global = true)]
    pub chain_key_file: Option<PathBuf>,

    /// Blocks that must follow a task's block before it is taken, and a result's block before
    /// it counts as written.
    #[arg(
        long,
        env = "COORDINATOR_CONFIRMATIONS",
        default_value_t = 2,
        global = true
    )]
    pub confirmations: u64,

    /// The first block scanned for tasks when the state directory has no cursor yet.
    #[arg(
        long,
        env = "COORDINATOR_CHAIN_START_BLOCK",
        default_value_t = 0,
        global = true
    )]
    pub chain_start_block: u64,

    /// Most blocks read in one `eth_getLogs` request.
    #[arg(
        long,
        env = "COORDINATOR_CHAIN_MAX_RANGE",
        default_value_t = 2000,
        global = true
    )]
    pub chain_max_range: u64,

    /// Seconds a result transaction gets to be mined and confirmed before it is replaced with
    /// a higher fee.
    #[arg(
        long,
        env = "COORDINATOR_CHAIN_RECEIPT_TIMEOUT_SEC",
        default_value_t = 60,
        global = true
    )]
    pub chain_receipt_timeout_sec: u64,
}

/// Commands besides serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Work with the TaskRegistry contract (settings from the `COORDINATOR_CHAIN_*` variables).
    #[command(subcommand)]
    Chain(ChainCommand),
    /// Check or repair the state directory (`COORDINATOR_STATE_DIR`) of a stopped coordinator.
    #[command(subcommand)]
    State(StateCommand),
    /// Checks a receipt (`GET /v1/tasks/{id}/receipt`, saved to a file): its signature (prints
    /// the signer), then reruns the task under the receipt's limits on the module fetched by its
    /// CID through the configured module store, and compares the `result_hash`. Exit 0 when it
    /// matches, 1 when it does not, 2 when the receipt cannot be checked.
    Verify {
        /// The receipt's JSON file.
        receipt: PathBuf,
    },
    /// API tokens for `COORDINATOR_TOKENS_FILE`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Prints the API's OpenAPI 3.1 document (what `GET /openapi.json` answers); regenerate the
    /// committed one with `cargo run -p coordinator -- openapi > docs/openapi.json`.
    Openapi,
    /// Internal: the compiler child process (module on stdin, compiled code on stdout).
    #[command(hide = true)]
    CompileModule,
}

/// `coordinator token ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Draws a token (256 random bits) and prints it, then the line of JSON that goes in the
    /// tokens file's `tokens` (its SHA-256; the token itself is never stored).
    New {
        /// The token's name, e.g. `acme-ci`.
        name: String,
    },
}

/// `coordinator state ...`: run while no coordinator uses the directory.
#[derive(Debug, Clone, Subcommand)]
pub enum StateCommand {
    /// Reads the journal and says what is intact and what is damaged; changes nothing. Exit 1
    /// when something is damaged.
    Check,
    /// Keeps a copy of the journal, then rewrites it with every intact record, so that the
    /// coordinator starts again with every task the damage spared.
    Salvage,
}

/// `coordinator chain ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum ChainCommand {
    /// Deploys a TaskRegistry owned by the key file's account and prints its address.
    Deploy,
    /// Authorises an executor account to write results (the owner's key file).
    Authorize {
        /// The executor's address (the coordinator logs it at start).
        #[arg(long)]
        executor: String,
        /// Withdraws the authorisation instead.
        #[arg(long)]
        revoke: bool,
    },
    /// Submits a task from the key file's account and prints its id (and, with `--wait`, its
    /// result).
    Submit {
        /// The module's IPFS CID.
        #[arg(long)]
        cid: String,
        /// The entry function.
        #[arg(long)]
        entry: String,
        /// The arguments, as a JSON array (`[12]`).
        #[arg(long, conflicts_with = "input")]
        args: Option<String>,
        /// The whole input document, as JSON (`{"args": [12]}`).
        #[arg(long)]
        input: Option<String>,
        /// Instruction budget (0: the coordinator's default).
        #[arg(long, default_value_t = 0)]
        fuel: u64,
        /// Wall-clock limit in seconds (0: the coordinator's default; for a k-of-n task the
        /// protocol's, 20 s).
        #[arg(long, default_value_t = 0)]
        timeout_sec: u32,
        /// Executors that may run it (n, 1 to 16); above 1 (or with `--fee` or `--deadline`)
        /// the task is k-of-n, by commit and reveal.
        #[arg(long, default_value_t = 1)]
        replicas: u8,
        /// Agreeing results that complete it (k, 1 to n).
        #[arg(long, default_value_t = 1)]
        quorum: u8,
        /// Wei sent with the task, held in escrow and shared by the agreeing executors.
        #[arg(long, default_value_t = 0)]
        fee: u128,
        /// Seconds from the chain's newest block by which the task must have its quorum (commits
        /// close halfway); a k-of-n task needs one. 0: none (a 1-of-1 task).
        #[arg(long, default_value_t = 0)]
        deadline: u64,
        /// Waits for the task's `TaskCompleted` and prints the result.
        #[arg(long)]
        wait: bool,
        /// Longest wait for the result, in seconds.
        #[arg(long, default_value_t = 300)]
        wait_timeout_sec: u64,
    },
    /// Prints where a task stands: its terms, each committer's part (committed, revealed,
    /// agreed, disagreed, missed) and its outcome.
    Status {
        /// The task's id in the registry.
        id: u64,
    },
}

/// Where tasks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// The seed's placeholder: the samples, or a tasks file.
    Placeholder,
    /// A TaskRegistry contract on an EVM chain.
    Chain,
}

/// Where tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// In this process, with the runtime library.
    Local,
    /// One Kubernetes Job per task.
    Kubernetes,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}
