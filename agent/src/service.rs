//! The gRPC face of the agent: turns prost requests into typed desktop operations and their
//! results back into prost answers. No X11 or process code lives here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream as FutStream;
use orgo_proto::v1 as pb;
use orgo_proto::v1::agent_server::Agent;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use crate::capture::Rect;
use crate::damage::DamageWatch;
use crate::desktop::{Desktop, ShotOptions, epoch_micros};
use crate::encode::{DEFAULT_QUALITY, Format};
use crate::error::AgentError;
use crate::exec::{DEFAULT_MAX_OUTPUT, Interpreter, Outcome, Spec, Stream};
use crate::input::{Button, ScrollDirection};

const DEFAULT_SCROLL: u32 = 3;
const MAX_SCROLL: u32 = 100;
const MAX_REPEAT: u32 = 100;
const MAX_TEXT_CHARS: usize = 100_000;
const MAX_DRAG: Duration = Duration::from_secs(60);
const MAX_DELAY_MS: u32 = 1000;
const DEFAULT_FPS: u32 = 15;

pub struct AgentService {
    desktop: Arc<Desktop>,
}

impl AgentService {
    pub fn new(desktop: Arc<Desktop>) -> Self {
        AgentService { desktop }
    }
}

/// What a gRPC method answers.
pub(crate) type Answer<T> = Result<Response<T>, Status>;
/// The stream a server-streaming gRPC method answers.
pub(crate) type BoxStream<T> = Pin<Box<dyn FutStream<Item = Result<T, Status>> + Send>>;

/// An `InvalidArgument` error with `msg`.
pub(crate) fn invalid(msg: impl Into<String>) -> AgentError {
    AgentError::InvalidArgument(msg.into())
}

fn point(p: Option<pb::Point>) -> Option<(i32, i32)> {
    p.map(|p| (p.x, p.y))
}

fn pointer(pos: (i32, i32)) -> Response<pb::PointerResponse> {
    Response::new(pb::PointerResponse {
        position: Some(pb::Point { x: pos.0, y: pos.1 }),
    })
}

fn button(raw: i32) -> Result<Button, AgentError> {
    match pb::MouseButton::try_from(raw) {
        Ok(pb::MouseButton::Unspecified | pb::MouseButton::Left) => Ok(Button::Left),
        Ok(pb::MouseButton::Middle) => Ok(Button::Middle),
        Ok(pb::MouseButton::Right) => Ok(Button::Right),
        Err(_) => Err(invalid(format!("unknown mouse button {raw}"))),
    }
}

fn quality(q: u32) -> Result<u8, AgentError> {
    match q {
        0 => Ok(DEFAULT_QUALITY),
        1..=100 => Ok(q as u8),
        _ => Err(invalid(format!("quality must be 1–100, not {q}"))),
    }
}

fn shot_options(r: &pb::ScreenshotRequest) -> Result<ShotOptions, AgentError> {
    let format = match pb::ImageFormat::try_from(r.format) {
        Ok(pb::ImageFormat::Unspecified | pb::ImageFormat::Jpeg) => Format::Jpeg {
            quality: quality(r.quality)?,
        },
        Ok(pb::ImageFormat::Png) => Format::Png,
        Err(_) => return Err(invalid(format!("unknown image format {}", r.format))),
    };
    let to_u16 =
        |v: u32, what: &str| u16::try_from(v).map_err(|_| invalid(format!("region {what} {v} is too large")));
    let region = match &r.region {
        Some(g) => Some(Rect {
            x: to_u16(g.x, "x")?,
            y: to_u16(g.y, "y")?,
            width: to_u16(g.width, "width")?,
            height: to_u16(g.height, "height")?,
        }),
        None => None,
    };
    Ok(ShotOptions {
        format,
        max_width: r.max_width as usize,
        max_height: r.max_height as usize,
        region,
    })
}

fn exec_spec(r: pb::ExecRequest) -> Result<Spec, AgentError> {
    let interpreter = match pb::Interpreter::try_from(r.interpreter) {
        Ok(pb::Interpreter::Unspecified | pb::Interpreter::Bash) => Interpreter::Bash,
        Ok(pb::Interpreter::Python) => Interpreter::Python,
        Err(_) => return Err(invalid(format!("unknown interpreter {}", r.interpreter))),
    };
    let timeout = match (r.timeout_millis, interpreter) {
        (0, Interpreter::Python) => Duration::from_secs(10),
        (0, Interpreter::Bash) => Duration::from_secs(30),
        (ms, _) => Duration::from_millis(u64::from(ms)),
    };
    Ok(Spec {
        interpreter,
        source: r.source,
        timeout,
        cwd: (!r.cwd.is_empty()).then(|| PathBuf::from(r.cwd)),
        env: r.env.into_iter().collect::<HashMap<_, _>>(),
        max_output: match r.max_output_bytes {
            0 => DEFAULT_MAX_OUTPUT,
            n => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(64 * DEFAULT_MAX_OUTPUT),
        },
    })
}

fn exec_response(o: Outcome) -> pb::ExecResponse {
    pb::ExecResponse {
        stdout: o.stdout,
        stderr: o.stderr,
        exit_code: o.exit_code,
        signal: o.signal,
        timed_out: o.timed_out,
        truncated: o.truncated,
        duration_micros: o.duration.as_micros() as u64,
    }
}

fn check_text(text: &str) -> Result<(), AgentError> {
    let n = text.chars().count();
    if n > MAX_TEXT_CHARS {
        return Err(invalid(format!(
            "text is {n} characters; the limit is {MAX_TEXT_CHARS}"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn health(&self, _: Request<pb::HealthRequest>) -> Answer<pb::HealthResponse> {
        let d = &self.desktop;
        Ok(Response::new(pb::HealthResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: d.started.elapsed().as_secs_f64(),
            display_ready: d.is_ready(),
            display: d.display.clone(),
        }))
    }

    async fn screen_info(&self, _: Request<pb::ScreenInfoRequest>) -> Answer<pb::ScreenInfoResponse> {
        let f = self.desktop.screen_facts().await?;
        Ok(Response::new(pb::ScreenInfoResponse {
            width: f.width.into(),
            height: f.height.into(),
            depth: f.depth.into(),
            display: self.desktop.display.clone(),
        }))
    }

    async fn screenshot(&self, req: Request<pb::ScreenshotRequest>) -> Answer<pb::ScreenshotResponse> {
        let opts = shot_options(req.get_ref())?;
        let shot = self.desktop.screenshot(opts).await?;
        let format = match opts.format {
            Format::Jpeg { .. } => pb::ImageFormat::Jpeg,
            Format::Png => pb::ImageFormat::Png,
        };
        Ok(Response::new(pb::ScreenshotResponse {
            width: shot.image.width as u32,
            height: shot.image.height as u32,
            image: shot.image.bytes,
            format: format.into(),
            capture_micros: shot.capture.as_micros() as u64,
            encode_micros: shot.encode.as_micros() as u64,
        }))
    }

    type WatchScreenStream = BoxStream<pb::Frame>;

    async fn watch_screen(&self, req: Request<pb::WatchScreenRequest>) -> Answer<Self::WatchScreenStream> {
        let r = req.into_inner();
        let fps = match r.max_fps {
            0 => DEFAULT_FPS,
            1..=60 => r.max_fps,
            n => return Err(invalid(format!("max_fps must be 1–60, not {n}")).into()),
        };
        let opts = ShotOptions {
            format: Format::Jpeg {
                quality: quality(r.quality)?,
            },
            max_width: r.max_width as usize,
            max_height: r.max_height as usize,
            region: None,
        };
        // Latest frame wins: a slow reader skips frames instead of queueing stale ones.
        let (tx, rx) = watch::channel::<Option<Result<pb::Frame, Status>>>(None);
        let desktop = self.desktop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {}
                r = stream_changes(&desktop, opts, Duration::from_secs(1) / fps, &tx) => {
                    if let Err(e) = r {
                        let _ = tx.send(Some(Err(e.into())));
                    }
                }
            }
        });
        let stream = tokio_stream::wrappers::WatchStream::from_changes(rx);
        let stream = futures::StreamExt::filter_map(stream, |f| async move { f });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn move_pointer(&self, req: Request<pb::MovePointerRequest>) -> Answer<pb::PointerResponse> {
        let to = req
            .into_inner()
            .to
            .ok_or_else(|| invalid("move needs a target point"))?;
        Ok(pointer(self.desktop.move_pointer(to.x, to.y).await?))
    }

    async fn click(&self, req: Request<pb::ClickRequest>) -> Answer<pb::PointerResponse> {
        let r = req.into_inner();
        let count = if r.count == 0 { 1 } else { r.count };
        Ok(pointer(
            self.desktop.click(point(r.at), button(r.button)?, count).await?,
        ))
    }

    async fn press_button(&self, req: Request<pb::ButtonRequest>) -> Answer<pb::PointerResponse> {
        let r = req.into_inner();
        Ok(pointer(
            self.desktop.button(point(r.at), button(r.button)?, true).await?,
        ))
    }

    async fn release_button(&self, req: Request<pb::ButtonRequest>) -> Answer<pb::PointerResponse> {
        let r = req.into_inner();
        Ok(pointer(
            self.desktop.button(point(r.at), button(r.button)?, false).await?,
        ))
    }

    async fn drag(&self, req: Request<pb::DragRequest>) -> Answer<pb::PointerResponse> {
        let r = req.into_inner();
        let duration = Duration::from_millis(u64::from(r.duration_millis));
        if duration > MAX_DRAG {
            return Err(invalid("drag duration must be at most 60 s").into());
        }
        let path = r.path.iter().map(|p| (p.x, p.y)).collect();
        Ok(pointer(
            self.desktop.drag(path, button(r.button)?, duration).await?,
        ))
    }

    async fn scroll(&self, req: Request<pb::ScrollRequest>) -> Answer<pb::PointerResponse> {
        let r = req.into_inner();
        let direction = match pb::ScrollDirection::try_from(r.direction) {
            Ok(pb::ScrollDirection::Unspecified | pb::ScrollDirection::Down) => ScrollDirection::Down,
            Ok(pb::ScrollDirection::Up) => ScrollDirection::Up,
            Ok(pb::ScrollDirection::Left) => ScrollDirection::Left,
            Ok(pb::ScrollDirection::Right) => ScrollDirection::Right,
            Err(_) => return Err(invalid(format!("unknown scroll direction {}", r.direction)).into()),
        };
        let amount = match r.amount {
            0 => DEFAULT_SCROLL,
            n if n <= MAX_SCROLL => n,
            n => return Err(invalid(format!("scroll amount must be 1–{MAX_SCROLL}, not {n}")).into()),
        };
        Ok(pointer(
            self.desktop.scroll(point(r.at), direction, amount).await?,
        ))
    }

    async fn cursor_position(&self, _: Request<pb::CursorPositionRequest>) -> Answer<pb::PointerResponse> {
        Ok(pointer(self.desktop.cursor().await?))
    }

    async fn type_text(&self, req: Request<pb::TypeTextRequest>) -> Answer<pb::KeyboardResponse> {
        let r = req.into_inner();
        check_text(&r.text)?;
        if r.delay_millis > MAX_DELAY_MS {
            return Err(invalid(format!("delay must be at most {MAX_DELAY_MS} ms")).into());
        }
        let sent = self
            .desktop
            .type_text(r.text, Duration::from_millis(r.delay_millis.into()))
            .await?;
        Ok(Response::new(pb::KeyboardResponse { sent }))
    }

    async fn press_key(&self, req: Request<pb::KeyRequest>) -> Answer<pb::KeyboardResponse> {
        let r = req.into_inner();
        let repeat = match r.repeat {
            0 => 1,
            n if n <= MAX_REPEAT => n,
            n => return Err(invalid(format!("repeat must be 1–{MAX_REPEAT}, not {n}")).into()),
        };
        let sent = self.desktop.key(r.combo, repeat).await?;
        Ok(Response::new(pb::KeyboardResponse { sent }))
    }

    async fn key_down(&self, req: Request<pb::KeyRequest>) -> Answer<pb::KeyboardResponse> {
        let sent = self.desktop.key_hold(req.into_inner().combo, true).await?;
        Ok(Response::new(pb::KeyboardResponse { sent }))
    }

    async fn key_up(&self, req: Request<pb::KeyRequest>) -> Answer<pb::KeyboardResponse> {
        let sent = self.desktop.key_hold(req.into_inner().combo, false).await?;
        Ok(Response::new(pb::KeyboardResponse { sent }))
    }

    async fn exec(&self, req: Request<pb::ExecRequest>) -> Answer<pb::ExecResponse> {
        let spec = exec_spec(req.into_inner())?;
        Ok(Response::new(exec_response(self.desktop.exec(spec, None).await?)))
    }

    type ExecStreamStream = BoxStream<pb::ExecEvent>;

    async fn exec_stream(&self, req: Request<pb::ExecRequest>) -> Answer<Self::ExecStreamStream> {
        let spec = exec_spec(req.into_inner())?.validate()?;
        let (out_tx, out_rx) = mpsc::channel::<Result<pb::ExecEvent, Status>>(32);
        let desktop = self.desktop.clone();
        tokio::spawn(async move {
            let (chunk_tx, mut chunk_rx) = mpsc::channel::<(Stream, Vec<u8>)>(32);
            let forward = {
                let out_tx = out_tx.clone();
                async move {
                    // Until the client goes away: then `chunk_rx` is dropped, and the run,
                    // seeing its output's receiver gone, is ended.
                    loop {
                        let (stream, bytes) = tokio::select! {
                            chunk = chunk_rx.recv() => match chunk {
                                Some(chunk) => chunk,
                                None => break,
                            },
                            () = out_tx.closed() => break,
                        };
                        let event = match stream {
                            Stream::Stdout => pb::exec_event::Event::Stdout(bytes),
                            Stream::Stderr => pb::exec_event::Event::Stderr(bytes),
                        };
                        if out_tx
                            .send(Ok(pb::ExecEvent { event: Some(event) }))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            };
            let (outcome, ()) = tokio::join!(desktop.exec(spec, Some(chunk_tx)), forward);
            let last = match outcome {
                Ok(o) => Ok(pb::ExecEvent {
                    event: Some(pb::exec_event::Event::Exit(exec_response(o))),
                }),
                Err(e) => Err(e.into()),
            };
            let _ = out_tx.send(last).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }
}

/// Sends a frame at once and then after every change of the screen (XDamage), at most one per
/// `interval`, until the receiver goes (Ok) or an error that no reconnection cures.
async fn stream_changes(
    desktop: &Desktop,
    opts: ShotOptions,
    interval: Duration,
    tx: &watch::Sender<Option<Result<pb::Frame, Status>>>,
) -> Result<(), AgentError> {
    let mut sequence = 0u64;
    let mut next = tokio::time::Instant::now();
    loop {
        // A new watch (first frame, or the X server came back): send the screen as it is.
        let display = desktop.display.clone();
        let mut damage = match tokio::task::spawn_blocking(move || DamageWatch::connect(&display)).await {
            Ok(Ok(d)) => d,
            Ok(Err(AgentError::DisplayUnavailable(_))) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(AgentError::X11(format!("damage task failed: {e}"))),
        };
        let mut changed = true;
        loop {
            if !changed && let Err(e) = damage.changed().await {
                tracing::debug!("damage watch lost: {e}");
                break;
            }
            tokio::time::sleep_until(next).await;
            // Frames are paced from capture start to capture start, so the rate asked is the
            // rate sent while the screen keeps changing.
            next = tokio::time::Instant::now() + interval;
            if let Err(e) = damage.rearm() {
                tracing::debug!("damage watch lost: {e}");
                break;
            }
            let frame = match desktop.frame(opts).await {
                Ok(f) => f,
                Err(AgentError::DisplayUnavailable(_)) => break,
                Err(e) => return Err(e),
            };
            sequence += 1;
            let msg = pb::Frame {
                width: frame.image.width as u32,
                height: frame.image.height as u32,
                jpeg: frame.image.bytes,
                sequence,
                captured_at_micros: epoch_micros(frame.captured_at),
            };
            if tx.send(Some(Ok(msg))).is_err() {
                return Ok(());
            }
            changed = false;
        }
    }
}
