//! The two streams of `orgo.agent.v1.Agent` as the gateway passes them on. The screen's
//! frames: the agent's stream is read as it comes and only the newest unsent frame is kept,
//! so a slow client gets the latest frame and the gateway holds at most one per stream. A
//! run's output: passed on as the client takes it (HTTP/2 flow control holds the agent back,
//! its output capped while read), within the run's budget. Either way a client that goes
//! away ends the agent's stream, and a desktop stopped, restarted, deleted or dead mid-stream
//! ends it with the status a call gets (`Desktops::lost_under_call`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::{Status, Streaming};

use orgo_proto::v1 as pb;

use super::status::status;
use crate::desktops::{AgentError, DesktopError, Desktops};
use crate::error::ApiError;
use crate::store::Computer;

/// Frames of the screen, newest first-come.
pub type Frames = BoxStream<'static, Result<pb::Frame, Status>>;
/// A run's output as it comes, then its exit.
pub type Events = BoxStream<'static, Result<pb::ExecEvent, Status>>;

/// A watch's parameters, checked as the live view checks its own: 0–60 frames a second (0:
/// the agent's 15), quality 0–100 (0: the default), bounds at most 65535.
pub fn check_watch(r: &pb::WatchScreenRequest) -> Result<(), ApiError> {
    if r.max_fps > 60 {
        return Err(ApiError::BadRequest(format!(
            "max_fps must be 0–60, not {}",
            r.max_fps
        )));
    }
    if r.quality > 100 {
        return Err(ApiError::BadRequest(format!(
            "quality must be 0–100, not {}",
            r.quality
        )));
    }
    if r.max_width.max(r.max_height) > 65_535 {
        return Err(ApiError::BadRequest(
            "max_width and max_height must be at most 65535 (0: no bound)".into(),
        ));
    }
    Ok(())
}

/// What a stream's failure means to its client: a desktop that went away reads as it does
/// for any call.
async fn failure(desktops: &Desktops, computer: &Computer, e: AgentError) -> Status {
    let e = if e.is_lost() {
        desktops.lost_under_call(computer, e).await
    } else {
        DesktopError::Agent(e)
    };
    status(e)
}

/// The newest frame not yet sent, and how the stream ended.
#[derive(Default)]
struct Slot {
    frame: Option<pb::Frame>,
    end: Option<Status>,
    done: bool,
}

#[derive(Default)]
struct Latest {
    slot: Mutex<Slot>,
    ready: Notify,
}

impl Latest {
    fn update(&self, change: impl FnOnce(&mut Slot)) {
        change(&mut self.slot.lock().unwrap_or_else(|p| p.into_inner()));
        self.ready.notify_one();
    }
}

/// Aborts the task reading the agent's stream when the client's stream is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The agent's `frames` of `computer`, latest frame wins; each frame read is activity.
pub fn latest(desktops: Arc<Desktops>, computer: Computer, mut frames: Streaming<pb::Frame>) -> Frames {
    let latest = Arc::new(Latest::default());
    let reader = {
        let latest = latest.clone();
        tokio::spawn(async move {
            let end = loop {
                match frames.message().await {
                    Ok(Some(frame)) => {
                        // Watching is using the desktop (recorded at most once a second).
                        let _ = desktops.note_activity(&computer.id).await;
                        latest.update(|slot| slot.frame = Some(frame));
                    }
                    Ok(None) => {
                        let ended = AgentError::Unreachable("the agent ended the screen's stream".into());
                        break failure(&desktops, &computer, ended).await;
                    }
                    Err(s) => break failure(&desktops, &computer, s.into()).await,
                }
            };
            latest.update(|slot| slot.end = Some(end));
        })
    };
    let guard = AbortOnDrop(reader);
    Box::pin(futures::stream::unfold(
        (latest, guard),
        |(latest, guard)| async move {
            loop {
                let next = {
                    let mut slot = latest.slot.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.done {
                        return None;
                    }
                    match (slot.frame.take(), slot.end.take()) {
                        (Some(frame), end) => {
                            slot.end = end;
                            Some(Ok(frame))
                        }
                        (None, Some(end)) => {
                            slot.done = true;
                            Some(Err(end))
                        }
                        (None, None) => None,
                    }
                };
                match next {
                    Some(item) => return Some((item, (latest, guard))),
                    None => latest.ready.notified().await,
                }
            }
        },
    ))
}

struct Run {
    desktops: Arc<Desktops>,
    computer: Computer,
    events: Streaming<pb::ExecEvent>,
    deadline: Instant,
    exited: bool,
    done: bool,
}

/// The agent's `events` of a run on `computer`, passed on as the client reads them, ended
/// within `budget` (the run's timeout and the agent deadline).
pub fn events(
    desktops: Arc<Desktops>,
    computer: Computer,
    events: Streaming<pb::ExecEvent>,
    budget: Duration,
) -> Events {
    let run = Run {
        desktops,
        computer,
        events,
        deadline: Instant::now() + budget,
        exited: false,
        done: false,
    };
    Box::pin(futures::stream::unfold(run, |mut run| async move {
        if run.done {
            return None;
        }
        let item = match tokio::time::timeout_at(run.deadline, run.events.message()).await {
            Ok(Ok(Some(event))) => {
                run.exited |= matches!(event.event, Some(pb::exec_event::Event::Exit(_)));
                return Some((Ok(event), run));
            }
            Ok(Ok(None)) if run.exited => return None,
            Ok(Ok(None)) => {
                let ended = AgentError::Unreachable("the agent ended a run's stream before its exit".into());
                failure(&run.desktops, &run.computer, ended).await
            }
            Ok(Err(s)) => failure(&run.desktops, &run.computer, s.into()).await,
            Err(_) => status(AgentError::TimedOut(
                "the run's stream outlived its budget".into(),
            )),
        };
        run.done = true;
        Some((Err(item), run))
    }))
}
