//! The file-descriptor limit: raised from soft to hard at start, and the connection cap fitted
//! under it with room for everything else the process opens (state, mirror, cache, gateway).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for everything but API connections: the state store and its journal, module
/// files, the cache, gateway and chain connections, the runtime (up to a half of a small limit).
pub const RESERVED: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard one and logs both; returns the soft limit now in
/// force (`None`: unlimited). A failure to raise is logged, and the old limit kept.
pub fn raise() -> Option<u64> {
    let before = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: before.maximum,
        maximum: before.maximum,
    };
    if before.current != before.maximum
        && let Err(e) = setrlimit(Resource::Nofile, raised)
    {
        tracing::warn!(soft = ?before.current, hard = ?before.maximum, error = %e, "could not raise the file-descriptor limit");
        return before.current;
    }
    let now = getrlimit(Resource::Nofile);
    tracing::info!(
        soft_before = ?before.current,
        soft = ?now.current,
        hard = ?now.maximum,
        "file-descriptor limit"
    );
    now.current
}

/// The connection cap under a descriptor limit of `fd_limit`: `wanted`, lowered (and logged) to
/// leave [`RESERVED`] descriptors, or half of a limit under twice that, for the rest.
pub fn fit_connections(wanted: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return wanted;
    };
    let allowed = limit.saturating_sub(RESERVED.min(limit / 2)).max(1);
    let allowed = usize::try_from(allowed).unwrap_or(usize::MAX);
    if wanted > allowed {
        tracing::warn!(
            wanted,
            allowed,
            fd_limit = limit,
            "COORDINATOR_HTTP_MAX_CONNECTIONS lowered to fit under the file-descriptor limit"
        );
        allowed
    } else {
        wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_other_descriptors() {
        assert_eq!(fit_connections(512, Some(1024)), 512);
        assert_eq!(fit_connections(5000, Some(1024)), 768);
        assert_eq!(fit_connections(512, Some(300)), 150);
        assert_eq!(fit_connections(512, Some(1)), 1);
        assert_eq!(fit_connections(512, None), 512);
    }
}
