//! Native twin of the Wasm benchmark guest: `fib-recursive-native N` prints fib(N).

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(40);
    println!("{}", fib_recursive::fib(std::hint::black_box(n)));
}
