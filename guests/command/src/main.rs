//! A WASI command for the tests. Its input document arrives on stdin; its `mode` says what to do:
//! - `sum`: print the sum of `args` and exit 0;
//! - `flood`: write `bytes` bytes to stdout and `bytes` to stderr, then exit 0;
//! - `snoop`: try to read host files, environment, arguments and the network; print what it saw;
//! - `exit`: exit with status `code`;
//! - `entropy`: print what the guest gets from WASI randomness and clocks.

use std::io::{Read, Write};

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("read stdin");
    let field = |name: &str| -> Option<String> {
        let key = format!("\"{name}\":");
        let start = input.find(&key)? + key.len();
        let rest = input[start..].trim_start();
        let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
        Some(rest[..end].trim().trim_matches('"').to_string())
    };
    match field("mode").as_deref() {
        Some("sum") => {
            let start = input.find('[').map_or(0, |i| i + 1);
            let end = input.find(']').unwrap_or(input.len());
            let sum: i64 = input[start..end]
                .split(',')
                .filter_map(|s| s.trim().parse::<i64>().ok())
                .sum();
            println!("sum={sum}");
        }
        Some("flood") => {
            let bytes: usize = field("bytes").and_then(|b| b.parse().ok()).unwrap_or(1 << 26);
            let line = [b'x'; 1024];
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            for _ in 0..bytes / line.len() {
                out.write_all(&line).expect("stdout");
                err.write_all(&line).expect("stderr");
            }
        }
        Some("snoop") => {
            let files = ["/etc/passwd", "/proc/self/environ", "/", ".", "/mnt"];
            for f in files {
                println!("read {f}: {:?}", std::fs::read(f).map(|b| b.len()));
                println!("list {f}: {:?}", std::fs::read_dir(f).map(|d| d.count()));
            }
            println!("create: {:?}", std::fs::write("/tmp/wasm-exec-escape", b"x"));
            println!("env: {:?}", std::env::vars().collect::<Vec<_>>());
            println!("args: {:?}", std::env::args().collect::<Vec<_>>());
            println!("cwd: {:?}", std::env::current_dir());
            println!("tcp: {:?}", std::net::TcpStream::connect("127.0.0.1:1").map(|_| ()));
        }
        Some("entropy") => {
            use std::hash::BuildHasher;
            let hash = std::collections::hash_map::RandomState::new().hash_one("x");
            let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            let start = std::time::Instant::now();
            println!("hash: {hash}");
            println!("wall: {wall:?}");
            println!("elapsed: {:?}", start.elapsed());
        }
        Some("exit") => {
            let code: i32 = field("code").and_then(|c| c.parse().ok()).unwrap_or(3);
            std::process::exit(code);
        }
        other => {
            eprintln!("unknown mode {other:?}; expected sum, flood, snoop or exit");
            std::process::exit(2);
        }
    }
}
