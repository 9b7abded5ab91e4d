//! WASI preview 1 `poll_oneoff` on virtual time: it never blocks.
//!
//! wasmtime-wasi's own implementation sleeps on the host (a relative clock subscription of
//! `u64::MAX` ns held a thread for ever). Ours replaces it in the linker: stdin (an in-memory
//! document), stdout and stderr (bounded captures) are always ready, so a subscription to them is
//! reported at once; with none of those, the clock jumps to the earliest clock deadline and the
//! subscriptions due by then are reported. Other descriptors do not exist (`badf` in the event).

use crate::clock::{FIXED_WALL_CLOCK_SECS, VirtualClock};
use crate::sandbox::HostState;
use wasmtime::{Caller, Extern, Linker};

/// Bytes of one `subscription` and of one `event` in guest memory (WASI p1 ABI).
const SUBSCRIPTION_BYTES: usize = 48;
const EVENT_BYTES: usize = 32;

/// WASI p1 errno values used here.
const ERRNO_SUCCESS: u16 = 0;
const ERRNO_BADF: u16 = 8;
const ERRNO_FAULT: u16 = 21;
const ERRNO_INVAL: u16 = 28;

/// `eventtype` values, which are also the subscription tags.
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;

/// `clockid` values, and the `subclockflags` bit for an absolute deadline.
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const SUBSCRIPTION_CLOCK_ABSTIME: u16 = 1;

/// Bytes a ready stdout or stderr reports it can take (the captures never refuse a write).
const WRITE_READY_BYTES: u64 = 64 * 1024;

/// One subscription, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscription {
    /// Due when the monotonic clock reaches `deadline` (ns).
    Clock { userdata: u64, deadline: u64 },
    /// A descriptor subscription: ready at once, or an error for a descriptor that does not exist.
    Fd {
        userdata: u64,
        kind: u8,
        error: u16,
        nbytes: u64,
    },
}

/// Replaces wasmtime-wasi's `poll_oneoff` in `linker` with the virtual-time one.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let defined = linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "poll_oneoff",
            |mut caller: Caller<'_, HostState>, subs: u32, events: u32, n: u32, nevents: u32| {
                poll_oneoff(&mut caller, subs, events, n, nevents)
            },
        )
        .map(|_| ());
    linker.allow_shadowing(false);
    defined
}

/// The host function: reads `n` subscriptions at `subs`, writes the ready events at `events` and
/// their number at `nevents`; returns a WASI errno.
fn poll_oneoff(
    caller: &mut Caller<'_, HostState>,
    subs: u32,
    events: u32,
    n: u32,
    nevents: u32,
) -> wasmtime::Result<i32> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(wasmtime::Error::msg(
            "poll_oneoff needs the guest to export its memory as \"memory\"",
        ));
    };
    if n == 0 {
        return Ok(ERRNO_INVAL.into());
    }
    let clock = caller.data().clock.clone();
    let data = memory.data(&*caller);
    let Some(raw) = slice(data, subs, n as usize * SUBSCRIPTION_BYTES) else {
        return Ok(ERRNO_FAULT.into());
    };
    let mut decoded = Vec::with_capacity(n as usize);
    for sub in raw.chunks_exact(SUBSCRIPTION_BYTES) {
        match decode(sub, &clock) {
            Some(sub) => decoded.push(sub),
            None => return Ok(ERRNO_INVAL.into()),
        }
    }
    let ready = ready_events(&decoded, &clock);
    let data = memory.data_mut(&mut *caller);
    let Some(out) = slice_mut(data, events, ready.len() * EVENT_BYTES) else {
        return Ok(ERRNO_FAULT.into());
    };
    for (event, chunk) in ready.iter().zip(out.chunks_exact_mut(EVENT_BYTES)) {
        chunk.copy_from_slice(event);
    }
    let Some(count) = slice_mut(data, nevents, 4) else {
        return Ok(ERRNO_FAULT.into());
    };
    // At most `n` events, and `n` came in as a u32.
    count.copy_from_slice(&u32::try_from(ready.len()).unwrap_or(n).to_le_bytes());
    Ok(ERRNO_SUCCESS.into())
}

/// Decodes one subscription; `None` for an unknown tag or clock (the call fails with `inval`).
fn decode(sub: &[u8], clock: &VirtualClock) -> Option<Subscription> {
    let userdata = u64_at(sub, 0);
    let now = clock.peek();
    match sub[8] {
        EVENTTYPE_CLOCK => {
            let id = u32_at(sub, 16);
            let timeout = u64_at(sub, 24);
            let absolute = u16_at(sub, 40) & SUBSCRIPTION_CLOCK_ABSTIME != 0;
            let deadline = match (id, absolute) {
                (CLOCK_MONOTONIC, true) => timeout,
                (CLOCK_MONOTONIC | CLOCK_REALTIME, false) => now.saturating_add(timeout),
                (CLOCK_REALTIME, true) => {
                    let wall_now = FIXED_WALL_CLOCK_SECS * 1_000_000_000;
                    now.saturating_add(timeout.saturating_sub(wall_now))
                }
                _ => return None,
            };
            Some(Subscription::Clock { userdata, deadline })
        }
        kind @ (EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE) => {
            let fd = u32_at(sub, 16);
            let (error, nbytes) = match (kind, fd) {
                // stdin holds the whole input document: reading never waits (1 = data or EOF).
                (EVENTTYPE_FD_READ, 0) => (ERRNO_SUCCESS, 1),
                (EVENTTYPE_FD_WRITE, 1 | 2) => (ERRNO_SUCCESS, WRITE_READY_BYTES),
                _ => (ERRNO_BADF, 0),
            };
            Some(Subscription::Fd {
                userdata,
                kind,
                error,
                nbytes,
            })
        }
        _ => None,
    }
}

/// The events to report, encoded: every descriptor subscription (all are ready at once) and the
/// clocks already due; when there is no descriptor subscription, the clock first jumps to the
/// earliest deadline, so at least one clock is due.
fn ready_events(subs: &[Subscription], clock: &VirtualClock) -> Vec<[u8; EVENT_BYTES]> {
    let any_fd = subs.iter().any(|s| matches!(s, Subscription::Fd { .. }));
    if !any_fd {
        let earliest = subs.iter().filter_map(|s| match s {
            Subscription::Clock { deadline, .. } => Some(*deadline),
            Subscription::Fd { .. } => None,
        });
        if let Some(earliest) = earliest.min() {
            clock.advance_to(earliest);
        }
    }
    let now = clock.peek();
    subs.iter()
        .filter_map(|sub| match *sub {
            Subscription::Clock { userdata, deadline } if deadline <= now => {
                Some(event(userdata, ERRNO_SUCCESS, EVENTTYPE_CLOCK, 0))
            }
            Subscription::Clock { .. } => None,
            Subscription::Fd {
                userdata,
                kind,
                error,
                nbytes,
            } => Some(event(userdata, error, kind, nbytes)),
        })
        .collect()
}

/// One `event` in the WASI p1 layout: userdata, errno, type, then `nbytes` and `flags` (0).
fn event(userdata: u64, error: u16, kind: u8, nbytes: u64) -> [u8; EVENT_BYTES] {
    let mut out = [0u8; EVENT_BYTES];
    out[0..8].copy_from_slice(&userdata.to_le_bytes());
    out[8..10].copy_from_slice(&error.to_le_bytes());
    out[10] = kind;
    out[16..24].copy_from_slice(&nbytes.to_le_bytes());
    out
}

fn slice(data: &[u8], at: u32, len: usize) -> Option<&[u8]> {
    let start = at as usize;
    data.get(start..start.checked_add(len)?)
}

fn slice_mut(data: &mut [u8], at: u32, len: usize) -> Option<&mut [u8]> {
    let start = at as usize;
    data.get_mut(start..start.checked_add(len)?)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_jump_to_the_earliest_deadline_and_only_due_ones_fire() {
        let clock = VirtualClock::default();
        let subs = [
            Subscription::Clock {
                userdata: 1,
                deadline: u64::MAX,
            },
            Subscription::Clock {
                userdata: 2,
                deadline: 5_000,
            },
        ];
        let events = ready_events(&subs, &clock);
        assert_eq!(events.len(), 1);
        assert_eq!(u64_at(&events[0], 0), 2);
        assert_eq!(clock.peek(), 5_000);
    }

    #[test]
    fn ready_descriptors_fire_without_moving_the_clock() {
        let clock = VirtualClock::default();
        let subs = [
            Subscription::Clock {
                userdata: 1,
                deadline: 1_000_000,
            },
            Subscription::Fd {
                userdata: 2,
                kind: EVENTTYPE_FD_READ,
                error: ERRNO_SUCCESS,
                nbytes: 1,
            },
        ];
        let events = ready_events(&subs, &clock);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0][10], EVENTTYPE_FD_READ);
        assert_eq!(clock.peek(), 0);
    }
}
