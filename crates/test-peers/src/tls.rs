//! TLS for the tests of `https://` and `wss://` URLs: a throwaway CA and a server certificate for
//! 127.0.0.1 made with `openssl`, and `testdata/tls/tls-proxy.py` terminating TLS in front of a
//! plain-HTTP peer (anvil, a stand-in gateway); the proxy is killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A test CA and a server certificate it signed for `127.0.0.1` and `localhost` (2 days).
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Makes the CA and the server certificate (RSA 2048) in a fresh temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the certificates");
        let path = dir.path();
        let subject = |cn: &str| format!("/CN={cn}");
        run(
            openssl(path, &["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
                .args(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"])
                .args(["-subj", &subject("wasm-exec test CA")]),
        );
        run(openssl(path, &["req", "-newkey", "rsa:2048", "-nodes"])
            .args(["-keyout", "server.key", "-out", "server.csr"])
            .args(["-subj", &subject("localhost")]));
        std::fs::write(
            path.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write ext.cnf");
        run(openssl(path, &["x509", "-req", "-in", "server.csr"])
            .args(["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"])
            .args(["-out", "server.pem", "-days", "2", "-extfile", "ext.cnf"]));
        Self { dir }
    }

    /// The CA certificate (PEM): what `SSL_CERT_FILE` points at to trust the server.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Starts TLS in front of `upstream` (`http://127.0.0.1:PORT`) with the server certificate.
    pub fn proxy(&self, upstream: &str) -> TlsProxy {
        let mut child = Command::new("python3")
            .arg(crate::repo("testdata/tls/tls-proxy.py"))
            .args([
                self.dir.path().join("server.pem"),
                self.dir.path().join("server.key"),
            ])
            .arg(upstream)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the TLS proxy (python3)");
        let mut port = String::new();
        BufReader::new(child.stdout.take().expect("the proxy's stdout"))
            .read_line(&mut port)
            .expect("the proxy's port");
        let port = port.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the TLS proxy printed no port: {port:?}")
        });
        TlsProxy { child, port }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A running TLS proxy on `127.0.0.1:port`; killed on drop.
pub struct TlsProxy {
    child: Child,
    /// The port it listens on (TLS).
    pub port: u16,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl` with `args`, run in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    cmd
}

/// Runs `cmd`, panicking with its stderr if it fails.
fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .expect("openssl (scripts/install-test-peers installs it)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
