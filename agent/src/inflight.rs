//! When a borrowed keycode may be bound to another keysym: once no client can still translate
//! its last press. X clients translate a key press when they process it, not when the server
//! delivers it, and they translate it with the keyboard mapping they hold at that moment —
//! which, after a mapping change, Xlib and xkbcommon fetch again from the server (lazily, often
//! for every key they process while a change is pending). So a keycode rebound while the
//! focused client still has presses of it queued is translated with the new binding: the
//! characters come out wrong, however long the client took to read the mapping itself.
//!
//! The rule: a keycode pressed while a client had the focus may be rebound once that client has
//! been seen idle after the press was delivered — every thread of its process asleep, and none
//! scheduled across several round trips to the server, so it has processed (and translated) every
//! event it had. The client's process comes from the X-Resource extension, its threads' states
//! and scheduling counts from `/proc`. The round trips go over a connection the server serves
//! after every other client (SYNC priority), so a client asleep only while it waits for the
//! server to answer it is woken, and seen running, before they end. Waiting for the mapping
//! reads of the client (X RECORD) is not enough: the clients tried (xterm, Tk) read the mapping
//! as soon as they see the change, then translate the keys queued behind it, each with the
//! mapping they fetch then. Without a process to look at (no X-Resource, a remote client, the
//! focus on no client's window: None, PointerRoot, the root), or for a client that stays busy
//! past a bound, a keycode may be rebound once its last press is a settle time old; such a
//! client is watched again a while later (a client slow for a moment, as on a loaded machine,
//! is not settled for ever after).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::res::{self, ClientIdMask, ClientIdSpec, ConnectionExt as _};
use x11rb::protocol::sync::{self, ConnectionExt as _};
use x11rb::protocol::xproto::ConnectionExt as _;

use crate::error::Result;
use crate::x11::XConn;

/// How long a keycode stays bound after its last press when no client can be watched.
pub const SETTLE: Duration = Duration::from_millis(100);
/// How long to wait for a client to become idle before settling for it instead (a client that
/// never idles: animations, a busy loop).
const IDLE_WAIT: Duration = Duration::from_secs(5);
/// How long a client that stayed busy past `IDLE_WAIT` is settled for before it is waited for
/// again: a client that never idles costs `IDLE_WAIT` once per this, a client busy for a moment
/// is soon watched again.
const BUSY_FOR: Duration = Duration::from_secs(30);
/// How often a busy client is looked at again while waiting.
const IDLE_POLL: Duration = Duration::from_millis(1);
/// Round trips a client must stay asleep and unscheduled across to count as idle.
const IDLE_CHECKS: usize = 4;
const FOCUS_POINTER_ROOT: u32 = 1;

/// A client by its resource-id base.
type Client = u32;

/// The last press of a borrowed keycode.
#[derive(Debug, Clone, Copy)]
struct Press {
    /// Which call to [`InFlight::note_pressed`] pressed it.
    round: u64,
    at: Instant,
    client: Option<Client>,
}

/// What is known about a client.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    pid: Option<u32>,
    /// The last round after which the client was seen idle.
    idle_after: u64,
    /// It stayed busy past the bound: settled for until then.
    busy_until: Option<Instant>,
}

impl Seen {
    /// Whether presses to the client wait until it is seen idle (rather than a settle time).
    fn watched(&self) -> bool {
        self.pid.is_some() && self.busy_until.is_none_or(|until| Instant::now() >= until)
    }
}

/// Tracks which borrowed keycodes a client may still translate; see the module docs.
pub struct InFlight {
    /// A connection of its own whose requests the server serves after every other client's
    /// (SYNC priority), so that a round trip on it lets any client waiting for a reply get it.
    probe: XConn,
    /// Whether the server has the X-Resource extension, to find a client's process.
    res: bool,
    id_mask: u32,
    round: u64,
    pressed: HashMap<u8, Press>,
    clients: HashMap<Client, Seen>,
}

/// Which keycodes may be rebound now.
pub struct Free {
    busy: Vec<u8>,
}

impl Free {
    pub fn allows(&self, keycode: u8) -> bool {
        !self.busy.contains(&keycode)
    }
}

impl InFlight {
    pub fn new(display: &str, x: &XConn) -> Result<InFlight> {
        let probe = XConn::open(display)?;
        if probe
            .conn
            .extension_information(sync::X11_EXTENSION_NAME)?
            .is_some()
        {
            probe.conn.sync_initialize(3, 1)?.reply()?;
            probe.conn.sync_set_priority(x11rb::NONE, i32::MIN)?;
        }
        let res = x.conn.extension_information(res::X11_EXTENSION_NAME)?.is_some()
            && x.conn
                .res_query_version(1, 2)?
                .reply()
                .is_ok_and(|v| (v.server_major, v.server_minor) >= (1, 2));
        Ok(InFlight {
            probe,
            res,
            id_mask: x.conn.setup().resource_id_mask,
            round: 0,
            pressed: HashMap::new(),
            clients: HashMap::new(),
        })
    }

    /// The client whose window has the keyboard focus, if any.
    pub fn focused(&self, x: &XConn) -> Result<Option<Client>> {
        let focus = x.conn.get_input_focus()?.reply()?.focus;
        Ok(match focus {
            x11rb::NONE | FOCUS_POINTER_ROOT => None,
            w if w == x.root => None,
            w => Some(w & !self.id_mask),
        })
    }

    /// Records presses of borrowed keycodes sent to `client`; the round trip that ends the
    /// batch delivers them before anything is asked of this tracker again.
    pub fn note_pressed(&mut self, client: Option<Client>, keycodes: impl Iterator<Item = u8>) {
        self.round += 1;
        let press = Press {
            round: self.round,
            at: Instant::now(),
            client,
        };
        for kc in keycodes {
            self.pressed.insert(kc, press);
        }
    }

    /// Whether the press may still be translated, as far as is known without waiting.
    fn in_flight(&self, press: &Press) -> bool {
        match press.client.map(|c| self.clients.get(&c)) {
            // Not looked up yet: `look` does that before anything is decided.
            Some(None) => true,
            Some(Some(seen)) if seen.watched() => seen.idle_after < press.round,
            _ => press.at.elapsed() < SETTLE,
        }
    }

    /// The process of a client, looked up once.
    fn seen(&mut self, x: &XConn, client: Client) -> Result<Seen> {
        if let Some(seen) = self.clients.get(&client) {
            return Ok(*seen);
        }
        let pid = match self.res {
            true => {
                let spec = ClientIdSpec {
                    client,
                    mask: ClientIdMask::LOCAL_CLIENT_PID,
                };
                let reply = x.conn.res_query_client_ids(&[spec])?.reply().ok();
                reply
                    .and_then(|r| {
                        r.ids
                            .into_iter()
                            .find(|id| id.spec.mask == ClientIdMask::LOCAL_CLIENT_PID)
                    })
                    .and_then(|id| id.value.first().copied())
            }
            false => None,
        };
        let seen = Seen {
            pid,
            ..Seen::default()
        };
        self.clients.insert(client, seen);
        Ok(seen)
    }

    /// Looks at the clients that may still translate a press, once each; a client found idle
    /// has translated every press delivered so far.
    fn look(&mut self, x: &XConn) -> Result<()> {
        let mut waiting: Vec<Client> = self
            .pressed
            .values()
            .filter(|p| self.in_flight(p))
            .filter_map(|p| p.client)
            .collect();
        waiting.sort_unstable();
        waiting.dedup();
        for client in waiting {
            let Some(pid) = self.seen(x, client)?.pid else {
                continue;
            };
            if process_idle(&self.probe, pid)? {
                let round = self.round;
                if let Some(seen) = self.clients.get_mut(&client) {
                    seen.idle_after = round;
                    seen.busy_until = None;
                }
            }
        }
        Ok(())
    }

    /// Which keycodes may be rebound now.
    pub fn free(&mut self, x: &XConn) -> Result<Free> {
        self.look(x)?;
        let busy: Vec<u8> = self
            .pressed
            .iter()
            .filter(|(_, p)| self.in_flight(p))
            .map(|(kc, _)| *kc)
            .collect();
        self.pressed.retain(|kc, _| busy.contains(kc));
        Ok(Free { busy })
    }

    /// Waits until a keycode may be rebound: until a client that may still translate one of
    /// them is idle, or a settle time. A client still busy after the bound is settled for, for
    /// `BUSY_FOR`.
    pub fn wait(&mut self, x: &XConn) -> Result<()> {
        let deadline = Instant::now() + IDLE_WAIT;
        loop {
            let before = self.free(x)?.busy.len();
            if before == 0 {
                return Ok(());
            }
            let watched = self.pressed.values().any(|p| {
                self.in_flight(p)
                    && p.client
                        .and_then(|c| self.clients.get(&c))
                        .is_some_and(Seen::watched)
            });
            if !watched {
                std::thread::sleep(SETTLE);
                return Ok(());
            }
            if Instant::now() >= deadline {
                for seen in self.clients.values_mut() {
                    if seen.idle_after < self.round {
                        seen.busy_until = Some(Instant::now() + BUSY_FOR);
                        tracing::debug!(pid = seen.pid, "focused client stays busy; settling for it");
                    }
                }
                return Ok(());
            }
            std::thread::sleep(IDLE_POLL);
            if self.free(x)?.busy.len() < before {
                return Ok(());
            }
        }
    }
}

/// Whether the process has nothing left to process: every thread asleep, and none of them ran
/// across [`IDLE_CHECKS`] round trips on the probe connection, each after a pause of
/// [`IDLE_POLL`]. A client asleep only while it waits for a reply is woken by the reply before
/// the probe's round trip ends (the server serves the probe after every other client with a
/// request waiting), so it is not taken for idle. Two round trips were not enough on a loaded
/// machine (about one run in eight of 20 back-to-back calls came out with a batch translated
/// with the next one's keys; none in 32 with four and the pauses), likely because the server
/// holds back the output of a client with requests of its own still queued until it has served
/// them, so its events can leave after the probe's reply. A process that cannot be looked at is not idle.
fn process_idle(probe: &XConn, pid: u32) -> Result<bool> {
    let Some(first) = threads(pid).filter(|t| t.asleep) else {
        return Ok(false);
    };
    for _ in 0..IDLE_CHECKS {
        // A moment for a client the last round trip woke to be scheduled, then another.
        std::thread::sleep(IDLE_POLL);
        probe.sync()?;
        match threads(pid) {
            Some(now) if now.asleep && now.ran == first.ran => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// The threads of a process: whether all are asleep, and how often they have been scheduled.
struct Threads {
    asleep: bool,
    ran: u64,
}

fn threads(pid: u32) -> Option<Threads> {
    let mut all = Threads { asleep: true, ran: 0 };
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        // A thread that ended while the others were read is simply not counted.
        let Ok(path) = task.map(|t| t.path()) else {
            continue;
        };
        let (Ok(stat), Ok(sched)) = (
            std::fs::read_to_string(path.join("stat")),
            std::fs::read_to_string(path.join("schedstat")),
        ) else {
            continue;
        };
        // The state follows the command name, which is in parentheses and may hold anything.
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        all.asleep &= matches!(state, Some('S' | 'I' | 'Z' | 'X'));
        // run time (ns), wait time, timeslices: any scheduling moves the first and the last.
        all.ran = sched
            .split_whitespace()
            .filter_map(|f| f.parse::<u64>().ok())
            .fold(all.ran, u64::wrapping_add);
    }
    Some(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_process_is_not_asleep_and_a_missing_one_cannot_be_looked_at() {
        let me = threads(std::process::id()).expect("this process has threads");
        assert!(!me.asleep, "the thread reading /proc is running");
        assert!(me.ran > 0);
        assert!(threads(u32::MAX).is_none());
    }
}
