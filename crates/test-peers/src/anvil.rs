//! A real anvil node for the tests, started on a free loopback port and killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The private keys of anvil's first funded accounts (its well-known test mnemonic).
pub const KEYS: [&str; 6] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
];

/// A running anvil.
pub struct Anvil {
    child: Child,
    /// Its HTTP JSON-RPC endpoint.
    pub url: String,
    port: u16,
    extra: Vec<String>,
    /// Its `HOME`: anvil keeps the states it moves out of memory in `~/.foundry/anvil/tmp`
    /// and, killed, never removes them (several GB after a drain); this goes on drop.
    home: tempfile::TempDir,
}

impl Anvil {
    /// Starts anvil (chain id 31337, one block per transaction) and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts anvil with extra arguments (e.g. `--block-time 1`).
    pub fn start_with(extra: &[&str]) -> Self {
        let port = crate::free_port();
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let home = tempfile::tempdir().expect("a home for anvil");
        Self {
            child: Self::spawn(port, &extra, home.path()),
            url: format!("http://127.0.0.1:{port}"),
            port,
            extra,
            home,
        }
    }

    /// Stops anvil with SIGTERM (so that `--state` is written), keeps it down for `down`, and
    /// starts it again on the same port with the same arguments.
    pub fn restart(&mut self, down: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = Self::spawn(self.port, &self.extra, self.home.path());
    }

    fn spawn(port: u16, extra: &[String], home: &std::path::Path) -> Child {
        let bin = crate::repo("peers/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
        assert!(
            bin.exists(),
            "anvil is not installed at {}; run scripts/install-test-peers",
            bin.display()
        );
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--chain-id", "31337", "--quiet"])
            .args(["--port", &port.to_string()])
            .args(extra)
            .env("HOME", home)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start anvil");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "anvil did not start within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
