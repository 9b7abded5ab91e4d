//! A CARv1 from an untrusted gateway rebuilt into a file (`wasm_exec_ipfs::file_from_car`).

use wasm_exec_ipfs::{CarLimits, file_from_car, parse_cid};

/// The roots of the CARs in `testdata/ipfs/`, so that mutations of them reach the DAG walk.
const ROOTS: [&str; 4] = [
    "bafybeigbz7g5prsjc2h77odar6gld3ugyisoawtqrs3rp3ziatpc4qt66u",
    "QmZ3EMnDuAvHFEaou1SQyWZaxn98evTABaZkhhc2kBp3vc",
    "bafkreidtzvyipc56wwfwmc2nbrtzq644ufbcdmycvrqvttuyemxlkzksge",
    "QmQFU9kicJ7JWXJmew2rZSh6UoZPvZF81N6LDfaeVMC489",
];

/// The first byte picks the root (low bits) and the limits (the default ones, or tight ones that
/// the fuzzer can reach); the rest is the CAR. Checks: no panic, and a rebuilt file within the
/// size limit.
pub fn car(data: &[u8]) {
    let Some((&pick, car)) = data.split_first() else {
        return;
    };
    let root = parse_cid(ROOTS[usize::from(pick) % ROOTS.len()]).expect("the roots are CIDs");
    let limits = if pick & 0x80 == 0 {
        CarLimits::default()
    } else {
        CarLimits {
            max_file_bytes: 1000,
            max_depth: 1,
            max_nodes: 8,
        }
    };
    if let Ok(file) = file_from_car(&root, car, &limits) {
        assert!(
            file.len() as u64 <= limits.max_file_bytes,
            "{} bytes",
            file.len()
        );
    }
}
