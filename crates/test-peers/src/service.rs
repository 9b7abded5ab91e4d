//! One of our binaries (the coordinator) started as a real process, its stderr collected, its API
//! address read from its log; killed and reaped on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running coordinator; killed when dropped.
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Everything it logged so far.
    pub log: Arc<Mutex<String>>,
    /// The thread copying stderr into `log`; it ends when the process's stderr closes.
    reader: Option<JoinHandle<()>>,
}

impl Service {
    /// Starts `cmd` and waits (up to 20 s) until its API listens.
    pub fn start(mut cmd: Command) -> Service {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start coordinator");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        // Owned by a `Service` at once, so a failed start still kills and reaps the process.
        let mut service = Service {
            child,
            base: String::new(),
            log,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = service.log.lock().expect("log").clone();
            if let Some(line) = text.lines().find(|l| l.contains("API listening")) {
                let address = line
                    .split("address=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .expect("address");
                service.base = format!("http://{address}");
                return service;
            }
            assert!(Instant::now() < deadline, "API did not start; log:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the log has a line containing `text` within `within` (the log is read as the
    /// process writes it, and the API listens before the scheduler starts).
    pub fn logged(&self, text: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.log.lock().expect("the log").contains(text) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process's peak resident memory so far (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        self.peak_rss_kib() / 1024
    }

    /// The process id (of the binary itself, also when started through `prlimit`, which execs).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The peak resident set size so far, in KiB (`VmHWM` of `/proc/<pid>/status`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the process's status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in:\n{status}"))
    }

    /// How many file descriptors the process has open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("the process's descriptors")
            .count()
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits for the exit code.
    pub fn signal_and_wait(mut self, signal: &str) -> Option<i32> {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().expect("wait");
        status.code()
    }

    /// How the process ended, if it has ended by itself (without a signal from this side).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the process")
    }

    /// SIGKILLs the process, reaps it and returns its whole log, read to the last line it wrote
    /// (the reader thread is joined once the pipe closes).
    pub fn kill_and_drain(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.log.lock().expect("the log").clone()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
