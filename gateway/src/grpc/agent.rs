//! `orgo.agent.v1.Agent` for API clients: each call finds the desktop its metadata names (see
//! `target`), turns the request into the one checked [`Action`] (the same bounds and
//! sentences as REST, field names as in the proto) and runs it through `Desktops::act`; the
//! calls that are no action (health, screen info) and the two streams go through the same
//! lifecycle watch (`Desktops::using`).

use std::time::Duration;

use tonic::{Request, Response, Status};

use orgo_proto::v1 as pb;

use super::status::status;
use super::streams;
use super::target;
use crate::action::{
    self, Action, Asked, Button, Direction, ImageFormat, Outcome, Point, Press, Program, Screen,
};
use crate::json::Invalid;
use crate::state::AppState;
use crate::store::Computer;

type Answer<T> = Result<Response<T>, Status>;

pub struct Agent {
    state: AppState,
}

impl Agent {
    pub fn new(state: AppState) -> Self {
        Agent { state }
    }

    /// The call's computer and its request.
    async fn open<R>(&self, request: Request<R>) -> Result<(Computer, R), Status> {
        let computer = target(&self.state, request.metadata()).await?;
        Ok((computer, request.into_inner()))
    }

    /// Runs the action `make` builds from the request on the call's computer.
    async fn act<R>(
        &self,
        request: Request<R>,
        make: impl FnOnce(R, &Screen) -> Result<Action, Invalid>,
    ) -> Result<Outcome, Status> {
        let (computer, r) = self.open(request).await?;
        let action = make(r, &self.state.desktops.screen(&computer)).map_err(status)?;
        self.state.desktops.act(&computer, action).await.map_err(status)
    }

    async fn pointer<R>(
        &self,
        request: Request<R>,
        make: impl FnOnce(R, &Screen) -> Result<Action, Invalid>,
    ) -> Answer<pb::PointerResponse> {
        match self.act(request, make).await? {
            Outcome::Pointer(p) => Ok(Response::new(pb::PointerResponse {
                position: Some(pb::Point { x: p.x, y: p.y }),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn keyboard<R>(
        &self,
        request: Request<R>,
        make: impl FnOnce(R, &Screen) -> Result<Action, Invalid>,
    ) -> Answer<pb::KeyboardResponse> {
        match self.act(request, make).await? {
            Outcome::Sent(sent) => Ok(Response::new(pb::KeyboardResponse { sent })),
            other => Err(unexpected(&other)),
        }
    }
}

/// An outcome of another kind than its action's: a bug, answered INTERNAL.
fn unexpected(outcome: &Outcome) -> Status {
    Status::internal(format!("unexpected outcome {outcome:?}"))
}

/// A point of the request, on the screen; errors name the field (`at.x`, `path[2].y`).
fn on_screen(screen: &Screen, field: &str, p: Option<pb::Point>) -> Result<Point, Invalid> {
    let p = p.ok_or_else(|| Invalid(format!("{field} is required")))?;
    Ok(Point {
        x: screen.x(&format!("{field}.x"), p.x.into())?,
        y: screen.y(&format!("{field}.y"), p.y.into())?,
    })
}

fn button(b: i32) -> Result<Button, Invalid> {
    match pb::MouseButton::try_from(b) {
        Ok(pb::MouseButton::Unspecified | pb::MouseButton::Left) => Ok(Button::Left),
        Ok(pb::MouseButton::Middle) => Ok(Button::Middle),
        Ok(pb::MouseButton::Right) => Ok(Button::Right),
        Err(_) => Err(Invalid(format!("button must be a MouseButton, not {b}"))),
    }
}

fn direction(d: i32) -> Result<Direction, Invalid> {
    match pb::ScrollDirection::try_from(d) {
        Ok(pb::ScrollDirection::Unspecified | pb::ScrollDirection::Down) => Ok(Direction::Down),
        Ok(pb::ScrollDirection::Up) => Ok(Direction::Up),
        Ok(pb::ScrollDirection::Left) => Ok(Direction::Left),
        Ok(pb::ScrollDirection::Right) => Ok(Direction::Right),
        Err(_) => Err(Invalid(format!("direction must be a ScrollDirection, not {d}"))),
    }
}

/// 0 means `default` in the proto's numbers.
fn or(v: u32, default: u32) -> u32 {
    if v == 0 { default } else { v }
}

/// A proto number where 0 means absent.
fn given(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

/// An `ExecRequest` as a checked run (`Action::Run`).
pub(super) fn run(r: pb::ExecRequest) -> Result<Action, Invalid> {
    let program = match pb::Interpreter::try_from(r.interpreter) {
        Ok(pb::Interpreter::Unspecified | pb::Interpreter::Bash) => Program::Bash,
        Ok(pb::Interpreter::Python) => Program::Python,
        Err(_) => {
            return Err(Invalid(format!(
                "interpreter must be an Interpreter, not {}",
                r.interpreter
            )));
        }
    };
    let timeout = given(r.timeout_millis).map(|ms| f64::from(ms) / 1000.0);
    Ok(Action::Run {
        program,
        timeout: action::run_timeout(program, timeout)?,
        source: action::source(r.source)?,
        options: action::run_options(
            (!r.cwd.is_empty()).then_some(r.cwd),
            r.env.into_iter().collect(),
            r.max_output_bytes,
        )?,
    })
}

#[tonic::async_trait]
impl pb::agent_server::Agent for Agent {
    type WatchScreenStream = streams::Frames;
    type ExecStreamStream = streams::Events;

    async fn health(&self, request: Request<pb::HealthRequest>) -> Answer<pb::HealthResponse> {
        let (computer, r) = self.open(request).await?;
        let desktops = &self.state.desktops;
        let health = desktops
            .ask(&computer, "health", async |mut agent| agent.health(r).await)
            .await
            .map_err(status)?;
        Ok(Response::new(health))
    }

    async fn screen_info(&self, request: Request<pb::ScreenInfoRequest>) -> Answer<pb::ScreenInfoResponse> {
        let (computer, r) = self.open(request).await?;
        let desktops = &self.state.desktops;
        let info = desktops
            .ask(&computer, "screen-info", async |mut agent| {
                agent.screen_info(r).await
            })
            .await
            .map_err(status)?;
        Ok(Response::new(info))
    }

    async fn screenshot(&self, request: Request<pb::ScreenshotRequest>) -> Answer<pb::ScreenshotResponse> {
        let outcome = self
            .act(request, |r, screen| {
                let format = match pb::ImageFormat::try_from(r.format) {
                    Ok(pb::ImageFormat::Unspecified | pb::ImageFormat::Jpeg) => ImageFormat::Jpeg,
                    Ok(pb::ImageFormat::Png) => ImageFormat::Png,
                    Err(_) => {
                        return Err(Invalid(format!(
                            "format must be an ImageFormat, not {}",
                            r.format
                        )));
                    }
                };
                let region = r.region.unwrap_or_default();
                let asked = Asked {
                    quality: given(r.quality),
                    max_width: given(r.max_width),
                    max_height: given(r.max_height),
                    x: r.region.map(|_| region.x),
                    y: r.region.map(|_| region.y),
                    width: r.region.and_then(|_| given(region.width)),
                    height: r.region.and_then(|_| given(region.height)),
                };
                Ok(Action::Screenshot(asked.shot(screen, format, false)?))
            })
            .await?;
        let Outcome::Screenshot(image) = outcome else {
            return Err(unexpected(&outcome));
        };
        Ok(Response::new(pb::ScreenshotResponse {
            format: match image.format {
                ImageFormat::Jpeg => pb::ImageFormat::Jpeg,
                ImageFormat::Png => pb::ImageFormat::Png,
            }
            .into(),
            image: image.bytes,
            width: image.width,
            height: image.height,
            capture_micros: image.capture_micros,
            encode_micros: image.encode_micros,
        }))
    }

    async fn watch_screen(
        &self,
        request: Request<pb::WatchScreenRequest>,
    ) -> Answer<Self::WatchScreenStream> {
        let (computer, r) = self.open(request).await?;
        streams::check_watch(&r).map_err(status)?;
        let frames = self.state.desktops.watch(&computer, r).await.map_err(status)?;
        Ok(Response::new(streams::latest(
            self.state.desktops.clone(),
            computer,
            frames,
        )))
    }

    async fn move_pointer(&self, request: Request<pb::MovePointerRequest>) -> Answer<pb::PointerResponse> {
        self.pointer(request, |r, screen| {
            Ok(Action::Move {
                to: on_screen(screen, "to", r.to)?,
            })
        })
        .await
    }

    async fn click(&self, request: Request<pb::ClickRequest>) -> Answer<pb::PointerResponse> {
        self.pointer(request, |r, screen| {
            Ok(Action::Click {
                at: r.at.map(|p| on_screen(screen, "at", Some(p))).transpose()?,
                button: button(r.button)?,
                count: action::click_count(or(r.count, 1))?,
            })
        })
        .await
    }

    async fn press_button(&self, request: Request<pb::ButtonRequest>) -> Answer<pb::PointerResponse> {
        self.pointer(request, |r, screen| press(r, screen, true)).await
    }

    async fn release_button(&self, request: Request<pb::ButtonRequest>) -> Answer<pb::PointerResponse> {
        self.pointer(request, |r, screen| press(r, screen, false)).await
    }

    async fn drag(&self, request: Request<pb::DragRequest>) -> Answer<pb::PointerResponse> {
        self.pointer(request, |r, screen| {
            let path = r
                .path
                .into_iter()
                .enumerate()
                .map(|(i, p)| on_screen(screen, &format!("path[{i}]"), Some(p)))
                .collect::<Result<Vec<_>, _>>()?;
            let duration = Duration::from_millis(r.duration_millis.into());
            if duration > action::MAX_DRAG {
                return Err(Invalid(format!(
                    "duration_millis must be at most {}",
                    action::MAX_DRAG.as_millis()
                )));
            }
            Ok(Action::Drag {
                path: action::drag_path(path)?,
                button: button(r.button)?,
                duration,
            })
        })
        .await
    }

    async fn scroll(&self, request: Request<pb::ScrollRequest>) -> Answer<pb::PointerResponse> {
        self.pointer(request, |r, screen| {
            Ok(Action::Scroll {
                at: r.at.map(|p| on_screen(screen, "at", Some(p))).transpose()?,
                direction: direction(r.direction)?,
                amount: action::scroll_amount(or(r.amount, 3).into())?,
            })
        })
        .await
    }

    async fn cursor_position(
        &self,
        request: Request<pb::CursorPositionRequest>,
    ) -> Answer<pb::PointerResponse> {
        self.pointer(request, |_, _| Ok(Action::Cursor)).await
    }

    async fn type_text(&self, request: Request<pb::TypeTextRequest>) -> Answer<pb::KeyboardResponse> {
        self.keyboard(request, |r, _| {
            let text = action::typeable(r.text)?;
            let delay = action::type_delay(&text, Duration::from_millis(r.delay_millis.into()))?;
            Ok(Action::Type { text, delay })
        })
        .await
    }

    async fn press_key(&self, request: Request<pb::KeyRequest>) -> Answer<pb::KeyboardResponse> {
        self.keyboard(request, |r, _| key(r, Press::Both)).await
    }

    async fn key_down(&self, request: Request<pb::KeyRequest>) -> Answer<pb::KeyboardResponse> {
        self.keyboard(request, |r, _| key(r, Press::Down)).await
    }

    async fn key_up(&self, request: Request<pb::KeyRequest>) -> Answer<pb::KeyboardResponse> {
        self.keyboard(request, |r, _| key(r, Press::Up)).await
    }

    async fn exec(&self, request: Request<pb::ExecRequest>) -> Answer<pb::ExecResponse> {
        let outcome = self.act(request, |r, _| run(r)).await?;
        let Outcome::Ran(ran) = outcome else {
            return Err(unexpected(&outcome));
        };
        Ok(Response::new(pb::ExecResponse {
            stdout: ran.stdout,
            stderr: ran.stderr,
            exit_code: ran.exit_code,
            signal: ran.signal,
            timed_out: ran.timed_out,
            truncated: ran.truncated,
            duration_micros: ran.took.as_micros() as u64,
        }))
    }

    async fn exec_stream(&self, request: Request<pb::ExecRequest>) -> Answer<Self::ExecStreamStream> {
        let (computer, r) = self.open(request).await?;
        let run = run(r).map_err(status)?;
        let budget = run.takes() + self.state.desktops.deadline();
        let events = self
            .state
            .desktops
            .exec_stream(&computer, run)
            .await
            .map_err(status)?;
        Ok(Response::new(streams::events(
            self.state.desktops.clone(),
            computer,
            events,
            budget,
        )))
    }
}

/// A button pressed (`down`) or released, where the pointer is when `at` is absent.
fn press(r: pb::ButtonRequest, screen: &Screen, down: bool) -> Result<Action, Invalid> {
    Ok(Action::Button {
        at: r.at.map(|p| on_screen(screen, "at", Some(p))).transpose()?,
        button: button(r.button)?,
        down,
    })
}

/// A key action: `repeat` (0 means 1) presses for a press and release; one for a hold or
/// a release.
fn key(r: pb::KeyRequest, press: Press) -> Result<Action, Invalid> {
    let repeat = or(r.repeat, 1);
    if press != Press::Both && repeat != 1 {
        return Err(Invalid("repeat is for PressKey only".into()));
    }
    Ok(Action::Key {
        combo: action::combo(r.combo)?,
        press,
        repeat: action::repeat(repeat)?,
    })
}
