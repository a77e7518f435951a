//! The one path an action takes into a desktop, whichever way it came in: the lifecycle's
//! watch over the call (`Desktops::using`), activity, the agent call within its budget, a kept
//! screenshot, and the action's metrics.

use std::time::{Duration, Instant};

use orgo_proto::connect::Agent;
use orgo_proto::v1 as pb;

use super::agent::call;
use super::{DesktopError, Desktops, new_id};
use crate::action::{
    Action, Button, Direction, Image, ImageFormat, Outcome, Point, Press, Program, Ran, RunOptions,
};
use crate::store::{Computer, now};

impl Desktops {
    /// Carries out `action` on `computer` (found with [`Desktops::find`], so in the caller's
    /// account, and the action checked against [`Desktops::screen`]).
    pub async fn act(&self, computer: &Computer, action: Action) -> Result<Outcome, DesktopError> {
        let name = action.name();
        let started = Instant::now();
        let result = self.run(computer, action).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(DesktopError::NotRunning(_) | DesktopError::NotFound(_)) => "not_running",
            Err(DesktopError::Agent(e)) if e.detail().is_none() => "refused",
            Err(_) => "failed",
        };
        self.metrics.record_action(name, outcome, started.elapsed());
        result
    }

    async fn run(&self, computer: &Computer, action: Action) -> Result<Outcome, DesktopError> {
        if let Action::Wait { seconds } = action {
            self.agent(computer).await?;
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            return Ok(Outcome::Waited(seconds));
        }
        let deadline = self.deadline();
        let takes = action.takes();
        let outcome = self
            .using(computer, async |agent| {
                Ok(agent_call(agent, action, deadline, takes).await?)
            })
            .await?;
        match outcome {
            Outcome::Screenshot(image) if image.kept => {
                self.storage
                    .keep(
                        &computer.account_id,
                        &computer.project_id,
                        &image.id,
                        image.format,
                        &image.bytes,
                    )
                    .await?;
                Ok(Outcome::Screenshot(image))
            }
            other => Ok(other),
        }
    }
}

impl Desktops {
    /// Starts `run` (an [`Action::Run`], checked as for [`Desktops::act`]) on `computer` with
    /// its output streamed as it comes: the agent's `ExecStream`, opened within the agent
    /// deadline. The run's own timeout still bounds it; dropping the stream ends the call.
    pub async fn exec_stream(
        &self,
        computer: &Computer,
        run: Action,
    ) -> Result<tonic::Streaming<pb::ExecEvent>, DesktopError> {
        let Action::Run {
            program,
            source,
            timeout,
            options,
        } = run
        else {
            return Err(crate::json::Invalid(format!("{} is not a run", run.name())).into());
        };
        let deadline = self.deadline();
        let request = exec_request(program, source, timeout, options);
        let started = Instant::now();
        let stream = self
            .using(computer, async |mut agent| {
                Ok(call(deadline, Duration::ZERO, agent.exec_stream(request)).await?)
            })
            .await;
        // Its time is the time to open it: the run's own is the program's.
        let outcome = if stream.is_ok() { "ok" } else { "failed" };
        self.metrics
            .record_action("exec-stream", outcome, started.elapsed());
        stream
    }
}

impl Desktops {
    /// A call to `computer`'s agent that is no action (its health, its screen's size): within
    /// the agent deadline, through [`Desktops::using`], counted as activity.
    pub async fn ask<T>(
        &self,
        computer: &Computer,
        name: &'static str,
        call_agent: impl AsyncFnOnce(Agent) -> Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, DesktopError> {
        let (deadline, started) = (self.deadline(), Instant::now());
        let result = self
            .using(computer, async |agent| {
                Ok(call(deadline, Duration::ZERO, call_agent(agent)).await?)
            })
            .await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.metrics.record_action(name, outcome, started.elapsed());
        result
    }
}

fn exec_request(program: Program, source: String, timeout: Duration, options: RunOptions) -> pb::ExecRequest {
    pb::ExecRequest {
        interpreter: match program {
            Program::Bash => pb::Interpreter::Bash,
            Program::Python => pb::Interpreter::Python,
        }
        .into(),
        source,
        timeout_millis: timeout.as_millis() as u32,
        cwd: options.cwd.unwrap_or_default(),
        env: options.env.into_iter().collect(),
        max_output_bytes: options.max_output_bytes,
    }
}

fn point(p: Point) -> pb::Point {
    pb::Point { x: p.x, y: p.y }
}

fn button(b: Button) -> i32 {
    match b {
        Button::Left => pb::MouseButton::Left,
        Button::Right => pb::MouseButton::Right,
        Button::Middle => pb::MouseButton::Middle,
    }
    .into()
}

fn direction(d: Direction) -> i32 {
    match d {
        Direction::Up => pb::ScrollDirection::Up,
        Direction::Down => pb::ScrollDirection::Down,
        Direction::Left => pb::ScrollDirection::Left,
        Direction::Right => pb::ScrollDirection::Right,
    }
    .into()
}

fn pointer(r: pb::PointerResponse) -> Outcome {
    let p = r.position.unwrap_or_default();
    Outcome::Pointer(Point { x: p.x, y: p.y })
}

/// The agent call of one action, and its answer as an outcome.
async fn agent_call(
    mut agent: Agent,
    action: Action,
    d: Duration,
    takes: Duration,
) -> Result<Outcome, super::AgentError> {
    Ok(match action {
        Action::Screenshot(shot) => {
            let request = pb::ScreenshotRequest {
                format: match shot.format {
                    ImageFormat::Jpeg => pb::ImageFormat::Jpeg,
                    ImageFormat::Png => pb::ImageFormat::Png,
                }
                .into(),
                quality: shot.quality,
                max_width: shot.max_width,
                max_height: shot.max_height,
                region: shot.region.map(|r| pb::Region {
                    x: r.x,
                    y: r.y,
                    width: r.width,
                    height: r.height,
                }),
            };
            let image = call(d, takes, agent.screenshot(request)).await?;
            Outcome::Screenshot(Image {
                id: new_id(),
                taken_at: now(),
                format: shot.format,
                bytes: image.image,
                width: image.width,
                height: image.height,
                kept: shot.keep,
                capture_micros: image.capture_micros,
                encode_micros: image.encode_micros,
            })
        }
        Action::Cursor => pointer(call(d, takes, agent.cursor_position(pb::CursorPositionRequest {})).await?),
        Action::Click { at, button: b, count } => {
            let request = pb::ClickRequest {
                at: at.map(point),
                button: button(b),
                count,
            };
            pointer(call(d, takes, agent.click(request)).await?)
        }
        Action::Move { to } => {
            let request = pb::MovePointerRequest { to: Some(point(to)) };
            pointer(call(d, takes, agent.move_pointer(request)).await?)
        }
        Action::Button { at, button: b, down } => {
            let request = pb::ButtonRequest {
                at: at.map(point),
                button: button(b),
            };
            if down {
                pointer(call(d, takes, agent.press_button(request)).await?)
            } else {
                pointer(call(d, takes, agent.release_button(request)).await?)
            }
        }
        Action::Drag {
            path,
            button: b,
            duration,
        } => {
            let request = pb::DragRequest {
                path: path.into_iter().map(point).collect(),
                button: button(b),
                duration_millis: duration.as_millis() as u32,
            };
            pointer(call(d, takes, agent.drag(request)).await?)
        }
        Action::Scroll {
            at,
            direction: dir,
            amount,
        } => {
            let request = pb::ScrollRequest {
                at: at.map(point),
                direction: direction(dir),
                amount,
            };
            pointer(call(d, takes, agent.scroll(request)).await?)
        }
        Action::Type { text, delay } => {
            let request = pb::TypeTextRequest {
                text,
                delay_millis: delay.as_millis() as u32,
            };
            Outcome::Sent(call(d, takes, agent.type_text(request)).await?.sent)
        }
        Action::Key { combo, press, repeat } => {
            let request = pb::KeyRequest { combo, repeat };
            let sent = match press {
                Press::Both => call(d, takes, agent.press_key(request)).await?,
                Press::Down => call(d, takes, agent.key_down(request)).await?,
                Press::Up => call(d, takes, agent.key_up(request)).await?,
            };
            Outcome::Sent(sent.sent)
        }
        Action::Run {
            program,
            source,
            timeout,
            options,
        } => {
            let request = exec_request(program, source, timeout, options);
            let o = call(d, takes, agent.exec(request)).await?;
            Outcome::Ran(Ran {
                program,
                stdout: o.stdout,
                stderr: o.stderr,
                exit_code: o.exit_code,
                signal: o.signal,
                timed_out: o.timed_out,
                truncated: o.truncated,
                took: Duration::from_micros(o.duration_micros),
            })
        }
        Action::Wait { seconds } => Outcome::Waited(seconds),
    })
}
