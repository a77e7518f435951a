//! `/api/computers…`: the SDK's computers and every desktop action. Each action parses its body
//! into a checked command (coordinates on the screen, known buttons and directions, bounded
//! amounts, text and timeouts) before the desktop's agent is called, within the request budget.

use std::future::Future;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use base64::Engine;
use orgo_proto::v1 as pb;
use serde_json::{Value, json};

use super::parse_body;
use super::wire::{self, CreateComputer, ScreenshotQuery};
use crate::auth::Caller;
use crate::desktops::new_id;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Account, Computer};

type Answer = Result<Json<Value>, ApiError>;

const MAX_TEXT_CHARS: usize = 100_000;
const MAX_SCROLL: i64 = 100;
const MAX_WAIT_SECONDS: f64 = 60.0;
const MAX_EXEC_SECONDS: f64 = 300.0;
/// Input is one queue per desktop: a drag holds it, and calls behind it must still end well
/// inside their budget.
const MAX_DRAG_SECONDS: f64 = 10.0;
/// What an exec may take beyond its timeout: killing its group and reading what is left.
const EXEC_SLACK: Duration = Duration::from_secs(5);

/// RAM in GB: a whole number from 1 to 64, or the default when absent.
pub fn ram(value: Option<f64>, default: u32) -> Result<u32, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if v.fract() == 0.0 && (1.0..=64.0).contains(&v) => Ok(v as u32),
        Some(v) => Err(ApiError::BadRequest(format!(
            "ram must be a whole number of GB from 1 to 64, not {v}"
        ))),
    }
}

/// CPU cores: 0.5 or a whole number from 1 to 64, or the default when absent.
pub fn cpu(value: Option<f64>, default: f64) -> Result<f64, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if v == 0.5 || (v.fract() == 0.0 && (1.0..=64.0).contains(&v)) => Ok(v),
        Some(v) => Err(ApiError::BadRequest(format!(
            "cpu must be 0.5 or a whole number from 1 to 64, not {v}"
        ))),
    }
}

fn find(state: &AppState, account: &Account, id: &str) -> Result<Computer, ApiError> {
    state
        .store
        .computer(&account.id, id)?
        .ok_or_else(|| ApiError::NotFound(format!("computer {id:?} not found")))
}

fn render(state: &AppState, c: &Computer) -> Value {
    wire::computer_json(
        &state.desktops,
        c,
        state.config.screen_width,
        state.config.screen_height,
    )
}

/// Runs an agent call within the budget `deadline` and maps its failure once.
pub(crate) async fn call<T>(
    deadline: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ApiError> {
    call_taking(deadline, Duration::ZERO, fut).await
}

/// `call` for an action that takes `takes` by itself (a drag's duration, an exec's timeout):
/// the budget comes on top.
async fn call_taking<T>(
    deadline: Duration,
    takes: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ApiError> {
    let budget = takes + deadline;
    match tokio::time::timeout(budget, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(status.into()),
        Err(_) => Err(ApiError::AgentTimeout(format!("no answer within {budget:?}"))),
    }
}

/// Screen coordinates checked against the desktop's size; errors name the field.
pub(crate) struct Screen {
    width: u32,
    height: u32,
}

impl Screen {
    pub(crate) fn of(state: &AppState) -> Screen {
        Screen {
            width: state.config.screen_width,
            height: state.config.screen_height,
        }
    }

    fn x(&self, field: &str, v: i64) -> Result<i32, ApiError> {
        check_axis(field, v, self.width)
    }

    fn y(&self, field: &str, v: i64) -> Result<i32, ApiError> {
        check_axis(field, v, self.height)
    }

    pub(crate) fn point(&self, x: i64, y: i64) -> Result<pb::Point, ApiError> {
        Ok(pb::Point {
            x: self.x("x", x)?,
            y: self.y("y", y)?,
        })
    }
}

fn check_axis(field: &str, v: i64, size: u32) -> Result<i32, ApiError> {
    if v < 0 || v >= i64::from(size) {
        return Err(ApiError::BadRequest(format!(
            "{field}={v} is outside the screen (0–{})",
            size - 1
        )));
    }
    Ok(v as i32)
}

pub(crate) fn button(name: Option<&str>) -> Result<pb::MouseButton, ApiError> {
    match name.map(str::to_ascii_lowercase).as_deref() {
        None | Some("left") => Ok(pb::MouseButton::Left),
        Some("right") => Ok(pb::MouseButton::Right),
        Some("middle") => Ok(pb::MouseButton::Middle),
        Some(other) => Err(ApiError::BadRequest(format!(
            "button must be left, right or middle, not {other:?}"
        ))),
    }
}

pub(crate) fn scroll_direction(name: Option<&str>) -> Result<pb::ScrollDirection, ApiError> {
    match name.map(str::to_ascii_lowercase).as_deref() {
        None | Some("down") => Ok(pb::ScrollDirection::Down),
        Some("up") => Ok(pb::ScrollDirection::Up),
        Some("left") => Ok(pb::ScrollDirection::Left),
        Some("right") => Ok(pb::ScrollDirection::Right),
        Some(other) => Err(ApiError::BadRequest(format!(
            "direction must be up, down, left or right, not {other:?}"
        ))),
    }
}

fn seconds(field: &str, v: Option<f64>, default: f64, max: f64) -> Result<Duration, ApiError> {
    let v = v.unwrap_or(default);
    if !v.is_finite() || v <= 0.0 || v > max {
        return Err(ApiError::BadRequest(format!(
            "{field} must be more than 0 and at most {max} seconds, not {v}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

pub async fn create(State(state): State<AppState>, Caller(account): Caller, body: Bytes) -> Answer {
    let req: CreateComputer = parse_body(&body)?;
    let project_id = req
        .workspace_id
        .or(req.project_id)
        .ok_or_else(|| ApiError::BadRequest("workspace_id (or project_id) is required".into()))?;
    if req.os.as_deref().is_some_and(|os| os != "linux") {
        return Err(ApiError::BadRequest("only linux desktops are available".into()));
    }
    if req.gpu.as_deref().is_some_and(|g| g != "none") {
        return Err(ApiError::BadRequest(
            "GPUs are not available; use gpu \"none\"".into(),
        ));
    }
    if req.image.is_some() {
        return Err(ApiError::BadRequest(
            "custom images are not available on this runtime".into(),
        ));
    }
    if let Some(name) = &req.name {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(ApiError::BadRequest(
                "name must be 1–64 letters, digits, '-' or '_'".into(),
            ));
        }
    }
    let project = state
        .store
        .project(&account.id, &project_id)?
        .ok_or_else(|| ApiError::NotFound(format!("workspace {project_id:?} not found")))?;
    let plan_ram = state.config.plan(&account.plan).map_or(4, |p| p.max_ram_gb);
    let ram = ram(req.ram, 4.min(plan_ram))?;
    let cpu = cpu(req.cpu, 1.0)?;
    let computer = state
        .desktops
        .create_computer(&account, &project, req.name, ram, cpu)
        .await?;
    Ok(Json(render(&state, &computer)))
}

pub async fn get(State(state): State<AppState>, Caller(account): Caller, Path(id): Path<String>) -> Answer {
    Ok(Json(render(&state, &find(&state, &account, &id)?)))
}

pub async fn delete(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
) -> Answer {
    let computer = find(&state, &account, &id)?;
    state.desktops.delete(&computer).await?;
    Ok(Json(json!({ "success": true, "id": computer.id })))
}

pub async fn cursor(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
) -> Answer {
    let computer = find(&state, &account, &id)?;
    let deadline = state.desktops.deadline();
    let r = state
        .desktops
        .using(&computer, async |mut agent| {
            call(deadline, agent.cursor_position(pb::CursorPositionRequest {})).await
        })
        .await?;
    let p = r.position.unwrap_or_default();
    Ok(Json(json!({ "success": true, "x": p.x, "y": p.y })))
}

pub async fn screenshot(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(id): Path<String>,
    query: Result<Query<ScreenshotQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    let (format, mime) = match q.format.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("jpeg") | Some("jpg") => (pb::ImageFormat::Jpeg, "image/jpeg"),
        Some("png") => (pb::ImageFormat::Png, "image/png"),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format must be jpeg or png, not {other:?}"
            )));
        }
    };
    let as_url = match q.response_format.as_deref() {
        None | Some("base64") => false,
        Some("url") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "response_format must be base64 or url, not {other:?}"
            )));
        }
    };
    if q.quality.is_some_and(|v| !(1..=100).contains(&v)) {
        return Err(ApiError::BadRequest("quality must be from 1 to 100".into()));
    }
    if q.max_width.max(q.max_height).is_some_and(|v| v > 65_535) {
        return Err(ApiError::BadRequest(
            "max_width and max_height must be at most 65535 (0: no bound)".into(),
        ));
    }
    // Any of x, y, width, height makes a region: x and y default to 0, and width and height to
    // the rest of the screen from there, which also bounds them. The corner must be on screen.
    let region = match (q.x, q.y, q.width, q.height) {
        (None, None, None, None) => None,
        (x, y, width, height) => {
            let screen = Screen::of(&state);
            let at = screen.point(i64::from(x.unwrap_or(0)), i64::from(y.unwrap_or(0)))?;
            let (x, y) = (at.x as u32, at.y as u32);
            let (rest_w, rest_h) = (screen.width - x, screen.height - y);
            let fits = |v: Option<u32>, max: u32| v.is_none_or(|v| (1..=max).contains(&v));
            if !fits(width, screen.width) || !fits(height, screen.height) {
                return Err(ApiError::BadRequest(format!(
                    "a region's width and height must be from 1 to the screen's {}x{}",
                    screen.width, screen.height
                )));
            }
            Some(pb::Region {
                x,
                y,
                width: width.map_or(rest_w, |w| w.min(rest_w)),
                height: height.map_or(rest_h, |h| h.min(rest_h)),
            })
        }
    };
    let computer = find(&state, &account, &id)?;
    let request = pb::ScreenshotRequest {
        format: format.into(),
        quality: q.quality.unwrap_or(0),
        max_width: q.max_width.unwrap_or(0),
        max_height: q.max_height.unwrap_or(0),
        region,
    };
    let deadline = state.desktops.deadline();
    let shot = state
        .desktops
        .using(&computer, async |mut agent| {
            call(deadline, agent.screenshot(request)).await
        })
        .await?;
    let shot_id = new_id();
    let ext = if format == pb::ImageFormat::Png {
        "png"
    } else {
        "jpg"
    };
    let storage_path = format!("screenshots/{shot_id}.{ext}");
    let timestamp = chrono_like_now();
    let metadata = json!({ "id": shot_id, "timestamp": timestamp, "size": shot.image.len(), "storage_path": storage_path });
    if as_url {
        let dir = state
            .config
            .data_dir
            .join("storage")
            .join(&account.id)
            .join("screenshots");
        std::fs::create_dir_all(&dir).map_err(|e| ApiError::Internal(format!("storage: {e}")))?;
        std::fs::write(dir.join(format!("{shot_id}.{ext}")), &shot.image)
            .map_err(|e| ApiError::Internal(format!("storage: {e}")))?;
        return Ok(Json(
            json!({ "success": true, "image": format!("/api/storage/{storage_path}"), "metadata": metadata }),
        ));
    }
    Ok(Json(json!({
        "success": true,
        "image": base64::engine::general_purpose::STANDARD.encode(&shot.image),
        "mime_type": mime,
        "width": shot.width,
        "height": shot.height,
        "metadata": metadata,
    })))
}

/// A screenshot stored by `?response_format=url`, readable by the account that took it only.
pub async fn stored_screenshot(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path(file): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let (stem, ext) = file.rsplit_once('.').unwrap_or((&file, ""));
    let mime = match ext {
        "jpg" => "image/jpeg",
        "png" => "image/png",
        _ => return Err(ApiError::NotFound("no such screenshot".into())),
    };
    if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::NotFound("no such screenshot".into()));
    }
    let path = screenshot_dir(&state, &account).join(&file);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::NotFound("no such screenshot".into()))?;
    Ok(([(axum::http::header::CONTENT_TYPE, mime)], bytes).into_response())
}

fn screenshot_dir(state: &AppState, account: &Account) -> std::path::PathBuf {
    state
        .config
        .data_dir
        .join("storage")
        .join(&account.id)
        .join("screenshots")
}

/// RFC 3339 UTC time of now, to the second.
fn chrono_like_now() -> String {
    let secs = crate::store::now();
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub async fn action(
    State(state): State<AppState>,
    Caller(account): Caller,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let mut computer = find(&state, &account, &id)?;
    let screen = Screen::of(&state);
    match action.as_str() {
        "start" => {
            state.desktops.start(&account, &mut computer).await?;
            return Ok(Json(render(&state, &computer)));
        }
        "stop" => {
            state.desktops.stop(&mut computer).await?;
            return Ok(Json(render(&state, &computer)));
        }
        "restart" => {
            state.desktops.restart(&account, &mut computer).await?;
            return Ok(Json(render(&state, &computer)));
        }
        "wait" => {
            let w: wire::Wait = parse_body(&body)?;
            let d = seconds("duration", Some(w.duration), 0.0, MAX_WAIT_SECONDS).or_else(|e| {
                if w.duration == 0.0 {
                    Ok(Duration::ZERO)
                } else {
                    Err(e)
                }
            })?;
            state.desktops.agent(&computer).await?;
            tokio::time::sleep(d).await;
            return Ok(Json(json!({ "success": true, "duration": w.duration })));
        }
        _ => {}
    }
    // Everything below is parsed before the agent is looked up, so bad input never reaches it.
    let command = Command::parse(&action, &body, &screen)?;
    let deadline = state.desktops.deadline();
    state
        .desktops
        .using(&computer, async |mut agent| {
            command.run(&mut agent, deadline).await
        })
        .await
}

/// Parses an action's body on a 1280×800 screen, for [`super::check_body`].
#[cfg(any(test, fuzzing))]
pub(crate) fn check_action(action: &str, body: &Bytes) -> Result<(), ApiError> {
    let screen = Screen {
        width: 1280,
        height: 800,
    };
    Command::parse(action, body, &screen).map(drop)
}

/// The agent's rule for control characters in typed text (`orgo_agent::keys::text_keys`),
/// checked before the call: line breaks (`\n`, `\r\n`, a lone `\r`), tab and backspace are
/// typed as keys; any other control character (Cc) refuses the text, named with its position in
/// the agent's words. `openapi.json` states the same set as the field's pattern.
fn check_typeable(text: &str) -> Result<(), ApiError> {
    match text
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{8}'))
    {
        None => Ok(()),
        Some((i, c)) => Err(ApiError::BadRequest(format!(
            "text contains the control character U+{:04X} at character {}; of the control characters only line breaks (\\n, \\r\\n, \\r), tab and backspace (U+0008) can be typed",
            c as u32,
            i + 1
        ))),
    }
}

/// A parsed desktop action.
enum Command {
    Click(pb::ClickRequest),
    Move(pb::MovePointerRequest),
    Button(pb::ButtonRequest, bool),
    Drag(pb::DragRequest),
    Scroll(pb::ScrollRequest),
    Type(pb::TypeTextRequest),
    Key(pb::KeyRequest),
    KeyHold(pb::KeyRequest, bool),
    Exec(pb::ExecRequest, bool),
}

impl Command {
    fn parse(action: &str, body: &Bytes, screen: &Screen) -> Result<Command, ApiError> {
        Ok(match action {
            "click" => {
                let c: wire::Click = parse_body(body)?;
                let count = match (c.double.unwrap_or(false), c.count) {
                    (_, Some(n)) if !(1..=3).contains(&n) => {
                        return Err(ApiError::BadRequest(format!("count must be 1, 2 or 3, not {n}")));
                    }
                    (_, Some(n)) => n,
                    (true, None) => 2,
                    (false, None) => 1,
                };
                Command::Click(pb::ClickRequest {
                    at: Some(screen.point(c.x, c.y)?),
                    button: button(c.button.as_deref())?.into(),
                    count,
                })
            }
            "move" => {
                let p: wire::Point = parse_body(body)?;
                Command::Move(pb::MovePointerRequest {
                    to: Some(screen.point(p.x, p.y)?),
                })
            }
            "mouse-down" | "mouse-up" => {
                let b: wire::Button = parse_body(body)?;
                let at = match (b.x, b.y) {
                    (Some(x), Some(y)) => Some(screen.point(x, y)?),
                    (None, None) => None,
                    _ => return Err(ApiError::BadRequest("give both x and y, or neither".into())),
                };
                Command::Button(
                    pb::ButtonRequest {
                        at,
                        button: button(b.button.as_deref())?.into(),
                    },
                    action == "mouse-down",
                )
            }
            "drag" => {
                let d: wire::Drag = parse_body(body)?;
                let duration = seconds("duration", d.duration, 0.5, MAX_DRAG_SECONDS).or_else(|e| {
                    if d.duration == Some(0.0) {
                        Ok(Duration::ZERO)
                    } else {
                        Err(e)
                    }
                })?;
                Command::Drag(pb::DragRequest {
                    path: vec![
                        pb::Point {
                            x: screen.x("start_x", d.start_x)?,
                            y: screen.y("start_y", d.start_y)?,
                        },
                        pb::Point {
                            x: screen.x("end_x", d.end_x)?,
                            y: screen.y("end_y", d.end_y)?,
                        },
                    ],
                    button: button(d.button.as_deref())?.into(),
                    duration_millis: duration.as_millis() as u32,
                })
            }
            "scroll" => {
                let s: wire::Scroll = parse_body(body)?;
                let direction = scroll_direction(s.direction.as_deref())?;
                let amount = s.amount.unwrap_or(3);
                if !(1..=MAX_SCROLL).contains(&amount) {
                    return Err(ApiError::BadRequest(format!(
                        "amount must be from 1 to {MAX_SCROLL}, not {amount}"
                    )));
                }
                // Orgo's Linux desktops scroll at (x, y) with a missing axis taken as 0, and at
                // the pointer when both are missing.
                let at = match (s.x, s.y) {
                    (None, None) => None,
                    (x, y) => Some(screen.point(x.unwrap_or(0), y.unwrap_or(0))?),
                };
                Command::Scroll(pb::ScrollRequest {
                    at,
                    direction: direction.into(),
                    amount: amount as u32,
                })
            }
            "type" => {
                let t: wire::TypeText = parse_body(body)?;
                let n = t.text.chars().count();
                if n == 0 || n > MAX_TEXT_CHARS {
                    return Err(ApiError::BadRequest(format!(
                        "text must be 1 to {MAX_TEXT_CHARS} characters"
                    )));
                }
                check_typeable(&t.text)?;
                Command::Type(pb::TypeTextRequest {
                    text: t.text,
                    delay_millis: 0,
                })
            }
            "key" | "key-down" | "key-up" => {
                let k: wire::Key = parse_body(body)?;
                if k.key.trim().is_empty() || k.key.len() > 200 {
                    return Err(ApiError::BadRequest(
                        "key must be a key name or combo such as \"ctrl+c\"".into(),
                    ));
                }
                let req = pb::KeyRequest {
                    combo: k.key,
                    repeat: 1,
                };
                match action {
                    "key" => Command::Key(req),
                    _ => Command::KeyHold(req, action == "key-down"),
                }
            }
            "bash" => {
                let b: wire::Bash = parse_body(body)?;
                let timeout = seconds("timeout", b.timeout, 30.0, MAX_EXEC_SECONDS)?;
                Command::Exec(exec_request(pb::Interpreter::Bash, b.command, timeout)?, true)
            }
            "exec" => {
                let e: wire::Exec = parse_body(body)?;
                let timeout = seconds("timeout", e.timeout, 10.0, MAX_EXEC_SECONDS)?;
                Command::Exec(exec_request(pb::Interpreter::Python, e.code, timeout)?, false)
            }
            other => return Err(ApiError::NotFound(format!("no computer action {other:?}"))),
        })
    }

    async fn run(self, agent: &mut orgo_proto::connect::Agent, d: Duration) -> Answer {
        let pointer = |r: pb::PointerResponse| {
            let p = r.position.unwrap_or_default();
            Json(json!({ "success": true, "x": p.x, "y": p.y }))
        };
        Ok(match self {
            Command::Click(r) => pointer(call(d, agent.click(r)).await?),
            Command::Move(r) => pointer(call(d, agent.move_pointer(r)).await?),
            Command::Button(r, true) => pointer(call(d, agent.press_button(r)).await?),
            Command::Button(r, false) => pointer(call(d, agent.release_button(r)).await?),
            Command::Drag(r) => {
                let takes = Duration::from_millis(u64::from(r.duration_millis));
                pointer(call_taking(d, takes, agent.drag(r)).await?)
            }
            Command::Scroll(r) => pointer(call(d, agent.scroll(r)).await?),
            Command::Type(r) => {
                Json(json!({ "success": true, "sent": call(d, agent.type_text(r)).await?.sent }))
            }
            Command::Key(r) => {
                Json(json!({ "success": true, "sent": call(d, agent.press_key(r)).await?.sent }))
            }
            Command::KeyHold(r, true) => {
                Json(json!({ "success": true, "sent": call(d, agent.key_down(r)).await?.sent }))
            }
            Command::KeyHold(r, false) => {
                Json(json!({ "success": true, "sent": call(d, agent.key_up(r)).await?.sent }))
            }
            Command::Exec(r, is_bash) => {
                let takes = Duration::from_millis(u64::from(r.timeout_millis)) + EXEC_SLACK;
                let o = call_taking(d, takes, agent.exec(r)).await?;
                let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
                let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
                let success = o.exit_code == Some(0) && !o.timed_out;
                let output = if is_bash {
                    format!("{stdout}{stderr}")
                } else {
                    stdout.clone()
                };
                let error = if o.timed_out {
                    "execution timed out".to_string()
                } else {
                    stderr.clone()
                };
                Json(json!({
                    "success": success,
                    "output": output,
                    "error": if success { Value::Null } else { Value::String(error) },
                    "stdout": stdout,
                    "stderr": stderr,
                    "exit_code": o.exit_code,
                    "timed_out": o.timed_out,
                    "truncated": o.truncated,
                    "duration_ms": o.duration_micros / 1000,
                }))
            }
        })
    }
}

fn exec_request(
    interpreter: pb::Interpreter,
    source: String,
    timeout: Duration,
) -> Result<pb::ExecRequest, ApiError> {
    if source.len() > 100_000 {
        return Err(ApiError::BadRequest("code must be at most 100000 bytes".into()));
    }
    Ok(pb::ExecRequest {
        interpreter: interpreter.into(),
        source,
        timeout_millis: timeout.as_millis() as u32,
        ..Default::default()
    })
}
