//! Change notification with XDamage objects on the root window. For the live view
//! ([`DamageWatch`]): on an X connection of its own whose socket the runtime's reactor watches
//! (through a duplicate of the descriptor, which x11rb keeps non-blocking); a still screen costs
//! no capture, no encode and no wake-up, and a change wakes the watcher at once. For
//! screenshots ([`Changes`]): on the capturer's own blocking connection, asked before each
//! capture, so a still screen's screenshot is the last one again.

use std::io::ErrorKind;
use std::os::fd::AsFd;

use tokio::io::Interest;
use tokio::net::UnixStream;
use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::damage::{self, ConnectionExt as _, ReportLevel};
use x11rb::protocol::xfixes::ConnectionExt as _;

use crate::error::{AgentError, Result};
use crate::x11::XConn;

/// Whether anything was drawn on the screen since the last capture, tracked on the capturer's
/// connection.
pub struct Changes {
    damage: damage::Damage,
}

impl Changes {
    /// Starts tracking on `x` (the capturer's connection); None when the server lacks XDamage
    /// (then every screenshot is captured afresh).
    pub fn track(x: &XConn) -> Option<Changes> {
        let start = || -> Result<Changes> {
            x.conn.xfixes_query_version(5, 0)?.reply()?;
            x.conn.damage_query_version(1, 1)?.reply()?;
            let damage = x.conn.generate_id()?;
            x.conn.damage_create(damage, x.root, ReportLevel::NON_EMPTY)?;
            x.sync()?;
            Ok(Changes { damage })
        };
        start()
            .inspect_err(|e| tracing::warn!(error = %e, "XDamage unavailable: every screenshot is captured"))
            .ok()
    }

    /// Whether anything was drawn since the last [`Changes::rearm`]. The round trip first
    /// makes every notification of drawing the server did before this call arrive, so a
    /// change finished before a screenshot was asked for is always seen. Any event counts:
    /// the damage's notifications are the only events this connection asks for, and an error
    /// is read as a change, to be safe.
    pub fn changed(&self, x: &XConn) -> Result<bool> {
        x.sync()?;
        let mut changed = false;
        while x.conn.poll_for_event()?.is_some() {
            changed = true;
        }
        Ok(changed)
    }

    /// Forgets the damage so far, so the next drawing reports again. Sent right before a
    /// capture: the server handles requests in order, so drawing after it is either in the
    /// capture or reported for the next one.
    pub fn rearm(&self, x: &XConn) -> Result<()> {
        x.conn.damage_subtract(self.damage, x11rb::NONE, x11rb::NONE)?;
        Ok(())
    }
}

pub struct DamageWatch {
    /// The X connection's socket as the reactor sees it; never read directly.
    readiness: UnixStream,
    x: XConn,
    damage: damage::Damage,
    /// A notification was read but not yet answered by `rearm`.
    pending: bool,
}

impl DamageWatch {
    /// Connects and starts watching the whole screen. Blocking: call it off the runtime.
    pub fn connect(display: &str) -> Result<Self> {
        let x = XConn::open(display)?;
        // XDamage needs XFixes negotiated first for its region arguments.
        x.conn.xfixes_query_version(5, 0)?.reply()?;
        x.conn.damage_query_version(1, 1)?.reply()?;
        let damage = x.conn.generate_id()?;
        x.conn.damage_create(damage, x.root, ReportLevel::NON_EMPTY)?;
        x.sync()?;
        let watch = |e: std::io::Error| AgentError::X11(format!("cannot watch the X connection: {e}"));
        let socket = x.conn.stream().as_fd().try_clone_to_owned().map_err(watch)?;
        let socket = std::os::unix::net::UnixStream::from(socket);
        socket.set_nonblocking(true).map_err(watch)?;
        let readiness = UnixStream::from_std(socket).map_err(watch)?;
        Ok(DamageWatch {
            readiness,
            x,
            damage,
            pending: false,
        })
    }

    /// Reads whatever the server sent; true if the screen changed.
    fn drain(x: &XConn, pending: &mut bool) -> Result<bool> {
        while let Some(event) = x.conn.poll_for_event()? {
            if matches!(event, Event::DamageNotify(_)) {
                *pending = true;
            }
        }
        Ok(*pending)
    }

    /// Waits until the screen changed since the last `rearm`.
    pub async fn changed(&mut self) -> Result<()> {
        let DamageWatch {
            readiness,
            x,
            pending,
            ..
        } = self;
        if Self::drain(x, pending)? {
            return Ok(());
        }
        loop {
            readiness
                .readable()
                .await
                .map_err(|e| AgentError::X11(format!("X connection: {e}")))?;
            // Nothing new clears the reactor's readiness, so the next wait sleeps.
            let mut failure = None;
            let seen = readiness.try_io(Interest::READABLE, || match Self::drain(x, pending) {
                Ok(true) => Ok(()),
                Ok(false) => Err(ErrorKind::WouldBlock.into()),
                Err(e) => {
                    failure = Some(e);
                    Ok(())
                }
            });
            if let Some(e) = failure {
                return Err(e);
            }
            if seen.is_ok() {
                return Ok(());
            }
        }
    }

    /// Forgets the damage so far, so the next change notifies again. Call it right before a
    /// capture: the round trip makes sure the server processed it before the capture's request.
    pub fn rearm(&mut self) -> Result<()> {
        Self::drain(&self.x, &mut self.pending)?;
        self.pending = false;
        self.x
            .conn
            .damage_subtract(self.damage, x11rb::NONE, x11rb::NONE)?;
        self.x.sync()
    }
}
