//! One viewer's WebSocket: frames out as they come, input in. An input message is a REST
//! action's body with its name beside it (`{"action": "click", "x": 5, "y": 9}`), parsed by
//! that action's own parser and run through `Desktops::act`, so the live view and REST share
//! one path and one set of limits. Only mouse and keyboard actions are taken here: a control
//! token drives the desktop, it does not run programs in it.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use orgo_proto::v1 as pb;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use std::sync::Arc;

use crate::action::{self, Action, Input, Press};
use crate::desktops::Desktops;
use crate::error::ApiError;
use crate::json::{Invalid, parse_body};
use crate::store::Computer;
use crate::token::{Grant, Mode};

/// How often an open viewer counts as activity on its desktop (for idle auto-stop).
const VIEWING_IS_ACTIVITY: Duration = Duration::from_secs(1);

/// The actions a viewer may send.
const INPUT_ACTIONS: &[&str] = &[
    "move",
    "click",
    "mouse-down",
    "mouse-up",
    "drag",
    "scroll",
    "type",
    "key",
    "key-down",
    "key-up",
];

pub struct Viewer {
    desktops: Arc<Desktops>,
    grant: Grant,
    computer: Computer,
    /// Keys this viewer holds down, released when it leaves so none stays stuck.
    held: BTreeSet<String>,
}

#[derive(Deserialize)]
struct Named {
    action: String,
}

/// The action an input message asks for.
fn parse(text: &str, screen: &action::Screen) -> Result<Action, Invalid> {
    let Named { action } = parse_body(text.as_bytes())?;
    let form = action::form(&action)
        .filter(|f| INPUT_ACTIONS.contains(&f.name))
        .ok_or_else(|| {
            Invalid(format!(
                "the live view takes {} actions, not {action:?}",
                INPUT_ACTIONS.join(", ")
            ))
        })?;
    // The action's own parser ignores the "action" field, as REST ignores unknown fields.
    let input = Input {
        body: text.as_bytes(),
        query: "",
    };
    (form.parse)(input, screen)
}

impl Viewer {
    pub fn new(desktops: Arc<Desktops>, grant: Grant, computer: Computer) -> Viewer {
        Viewer {
            desktops,
            grant,
            computer,
            held: BTreeSet::new(),
        }
    }

    pub async fn run(mut self, socket: WebSocket, mut frames: tonic::Streaming<pb::Frame>) {
        let (mut sink, mut incoming) = socket.split();
        let screen = self.desktops.screen(&self.computer);
        let hello = json!({
            "type": "hello",
            "mode": self.grant.mode.as_str(),
            "width": screen.width(),
            "height": screen.height(),
        });
        if sink.send(Message::Text(hello.to_string().into())).await.is_err() {
            return;
        }
        // The writer owns the socket's sending half: frames as they come, notices in between.
        let (notices, mut notice_rx) = mpsc::channel::<Value>(16);
        let desktops = self.desktops.clone();
        let id = self.computer.id.clone();
        let mut writer = tokio::spawn(async move {
            // Watching is activity even while the screen stands still and no frame flows.
            let mut watching = tokio::time::interval(VIEWING_IS_ACTIVITY);
            loop {
                let message = tokio::select! {
                    _ = watching.tick() => {
                        // A database away for a moment loses one mark of activity, not the view.
                        if let Err(e) = desktops.note_activity(&id).await {
                            tracing::debug!(error = %e, "cannot record viewing as activity");
                        }
                        continue;
                    }
                    frame = frames.message() => match frame {
                        Ok(Some(f)) => {
                            let mut bytes = Vec::with_capacity(8 + f.jpeg.len());
                            bytes.extend_from_slice(&f.captured_at_micros.to_le_bytes());
                            bytes.extend_from_slice(&f.jpeg);
                            Message::Binary(bytes.into())
                        }
                        Ok(None) | Err(_) => {
                            let bye = json!({"type": "error", "error": "the desktop stopped streaming (stopped or restarting)"});
                            let _ = sink.send(Message::Text(bye.to_string().into())).await;
                            let _ = sink.close().await;
                            return;
                        }
                    },
                    notice = notice_rx.recv() => match notice {
                        Some(n) => Message::Text(n.to_string().into()),
                        None => return,
                    },
                };
                if sink.send(message).await.is_err() {
                    return;
                }
            }
        });
        loop {
            let message = tokio::select! {
                _ = &mut writer => break,
                m = incoming.next() => m,
            };
            let text = match message {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            };
            if let Err(e) = self.input(text.as_str()).await {
                let _ = notices.try_send(json!({"type": "error", "error": e.to_string()}));
            }
        }
        writer.abort();
        self.release_held().await;
    }

    async fn input(&mut self, text: &str) -> Result<(), ApiError> {
        if self.grant.mode == Mode::View {
            return Err(ApiError::Forbidden("this viewer token is view-only".into()));
        }
        // Found again for each message: the desktop may have been stopped, restarted or
        // deleted since the viewer opened.
        let computer = self
            .desktops
            .find(&self.grant.account, &self.grant.computer)
            .await?;
        let action = parse(text, &self.desktops.screen(&computer))?;
        let held = match &action {
            Action::Key { combo, press, .. } if *press != Press::Both => Some((combo.clone(), *press)),
            _ => None,
        };
        self.desktops.act(&computer, action).await?;
        match held {
            Some((combo, Press::Down)) => self.held.insert(combo),
            Some((combo, _)) => self.held.remove(&combo),
            None => false,
        };
        Ok(())
    }

    async fn release_held(&mut self) {
        let Ok(computer) = self
            .desktops
            .find(&self.grant.account, &self.grant.computer)
            .await
        else {
            return;
        };
        for combo in std::mem::take(&mut self.held) {
            let up = Action::Key {
                combo,
                press: Press::Up,
                repeat: 1,
            };
            let _ = self.desktops.act(&computer, up).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{Button, Point};

    #[test]
    fn input_messages_are_rest_actions_with_the_rest_limits() {
        let screen = action::Screen::new(1280, 800);
        assert_eq!(
            parse(
                r#"{"action": "mouse-down", "button": "right", "x": 3, "y": 4}"#,
                &screen
            ),
            Ok(Action::Button {
                at: Some(Point { x: 3, y: 4 }),
                button: Button::Right,
                down: true
            })
        );
        assert!(matches!(
            parse(r#"{"action": "type", "text": "hi"}"#, &screen),
            Ok(Action::Type { .. })
        ));
        for (message, needle) in [
            (
                r#"{"action": "scroll", "direction": "up", "amount": 101}"#,
                "amount must be from 1 to 100",
            ),
            (r#"{"action": "key", "key": "   "}"#, "key must be a key name"),
            (r#"{"action": "move", "x": 1280, "y": 0}"#, "x=1280"),
            (r#"{"action": "bash", "command": "id"}"#, "the live view takes"),
            (r#"{"action": "teleport"}"#, "the live view takes"),
            (r#"{"x": 1}"#, "missing field `action`"),
            ("not json", "JSON"),
        ] {
            let e = parse(message, &screen).unwrap_err();
            assert!(e.0.contains(needle), "{message}: {e}");
        }
        let long = json!({"action": "type", "text": "ж".repeat(action::MAX_TEXT_CHARS)}).to_string();
        assert!(parse(&long, &screen).is_ok(), "the REST limit, in characters");
    }
}
