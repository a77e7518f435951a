//! The desktop as the service sees it: typed, async operations over the capture and input
//! components and the process runner. X work is blocking and runs on the blocking pool, one
//! component at a time behind its mutex; a display that is down answers `DisplayUnavailable`
//! at once instead of hanging or returning a black image.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::capture::{Capturer, Rect};
use crate::damage::Changes;
use crate::encode::{Encoded, Encoder, Format};
use crate::error::{AgentError, Result};
use crate::exec::{Outcome, Runner, Spec, Stream};
use crate::input::{Button, Input, InputTiming, ScrollDirection};
use crate::x11::Reconnecting;

/// Capture plus encoding state, kept together so buffers are reused across frames.
pub struct Screen {
    capturer: Capturer,
    encoder: Encoder,
    /// Drawing since the last screenshot (None without XDamage).
    changes: Option<Changes>,
    /// The last screenshot and what it was asked with: answered again, without capturing or
    /// encoding, while nothing was drawn since.
    last: Option<(ShotOptions, Encoded)>,
}

impl Screen {
    fn connect(display: &str) -> Result<Self> {
        let capturer = Capturer::connect(display)?;
        Ok(Screen {
            changes: Changes::track(&capturer.x),
            capturer,
            encoder: Encoder::new()?,
            last: None,
        })
    }

    /// A screenshot as `opts` asks: the last one again when it was asked the same way and
    /// nothing was drawn since, else captured and encoded (and kept for next time).
    fn shot(&mut self, opts: ShotOptions) -> Result<Shot> {
        let region = match opts.region {
            Some(r) => self.capturer.check_region(r)?,
            None => self.capturer.full_screen(),
        };
        let x = &self.capturer.x;
        let changed = match &self.changes {
            Some(changes) => changes.changed(x)?,
            None => true,
        };
        if !changed
            && let Some((asked, image)) = &self.last
            && *asked == opts
        {
            return Ok(Shot {
                image: image.clone(),
                capture: Duration::ZERO,
                encode: Duration::ZERO,
            });
        }
        if let Some(changes) = &self.changes {
            changes.rearm(x)?;
        }
        // Kept only once this capture is done: an error leaves no stale answer behind.
        self.last = None;
        let t0 = Instant::now();
        let frame = self.capturer.capture(region)?;
        let t1 = Instant::now();
        let image = self
            .encoder
            .encode(&frame, opts.format, opts.max_width, opts.max_height)?;
        let encode = t1.elapsed();
        self.last = self.changes.is_some().then(|| (opts, image.clone()));
        Ok(Shot {
            image,
            capture: t1 - t0,
            encode,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShotOptions {
    pub format: Format,
    pub max_width: usize,
    pub max_height: usize,
    pub region: Option<Rect>,
}

pub struct Shot {
    pub image: Encoded,
    pub capture: Duration,
    pub encode: Duration,
}

pub struct ScreenFacts {
    pub width: u16,
    pub height: u16,
    pub depth: u8,
}

pub struct Frame {
    pub image: Encoded,
    pub captured_at: SystemTime,
}

/// Tunables of one desktop.
#[derive(Debug, Clone, Copy)]
pub struct DesktopConfig {
    pub timing: InputTiming,
    /// How long borrowed keycodes stay bound after their last use.
    pub keymap_restore: Duration,
}

pub struct Desktop {
    pub display: String,
    pub started: Instant,
    ready: watch::Receiver<bool>,
    screen: Arc<Mutex<Reconnecting<Screen>>>,
    input: Arc<Mutex<Reconnecting<Input>>>,
    config: DesktopConfig,
    pub runner: Runner,
}

/// Runs `f` on a component on the blocking pool, connecting it first if needed.
async fn on<S: Send + 'static, T: Send + 'static>(
    ready: &watch::Receiver<bool>,
    component: &Arc<Mutex<Reconnecting<S>>>,
    connect: impl FnOnce(&str) -> Result<S> + Send + 'static,
    f: impl FnOnce(&mut S) -> Result<T> + Send + 'static,
) -> Result<T> {
    if !*ready.borrow() {
        return Err(AgentError::DisplayUnavailable(
            "the X server is restarting".into(),
        ));
    }
    let component = component.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = component.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.with(connect, f)
    })
    .await
    .map_err(|e| AgentError::X11(format!("display task failed: {e}")))?
}

impl Desktop {
    pub fn new(display: String, ready: watch::Receiver<bool>, config: DesktopConfig, runner: Runner) -> Self {
        Desktop {
            screen: Arc::new(Mutex::new(Reconnecting::new(display.clone()))),
            input: Arc::new(Mutex::new(Reconnecting::new(display.clone()))),
            display,
            started: Instant::now(),
            ready,
            config,
            runner,
        }
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    async fn screen<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Screen) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        on(&self.ready, &self.screen, Screen::connect, f).await
    }

    async fn input<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Input) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let timing = self.config.timing;
        on(
            &self.ready,
            &self.input,
            move |display: &str| Input::connect(display, timing),
            f,
        )
        .await
    }

    pub async fn screen_facts(&self) -> Result<ScreenFacts> {
        self.screen(|s| {
            Ok(ScreenFacts {
                width: s.capturer.x.width,
                height: s.capturer.x.height,
                depth: s.capturer.x.depth,
            })
        })
        .await
    }

    pub async fn screenshot(&self, opts: ShotOptions) -> Result<Shot> {
        self.screen(move |s| s.shot(opts)).await
    }

    /// The whole screen as a frame of the live view, stamped with its capture time.
    pub async fn frame(&self, opts: ShotOptions) -> Result<Frame> {
        self.screen(move |s| {
            let captured_at = SystemTime::now();
            let frame = s.capturer.capture(s.capturer.full_screen())?;
            let image = s
                .encoder
                .encode(&frame, opts.format, opts.max_width, opts.max_height)?;
            Ok(Frame { image, captured_at })
        })
        .await
    }

    pub async fn move_pointer(&self, x: i32, y: i32) -> Result<(i32, i32)> {
        self.input(move |i| i.move_to(x, y)).await
    }

    pub async fn click(&self, at: Option<(i32, i32)>, button: Button, count: u32) -> Result<(i32, i32)> {
        self.input(move |i| i.click(at, button, count)).await
    }

    pub async fn button(&self, at: Option<(i32, i32)>, button: Button, press: bool) -> Result<(i32, i32)> {
        self.input(move |i| i.button(at, button, press)).await
    }

    pub async fn drag(
        &self,
        path: Vec<(i32, i32)>,
        button: Button,
        duration: Duration,
    ) -> Result<(i32, i32)> {
        self.input(move |i| i.drag(&path, button, duration)).await
    }

    pub async fn scroll(
        &self,
        at: Option<(i32, i32)>,
        dir: ScrollDirection,
        amount: u32,
    ) -> Result<(i32, i32)> {
        self.input(move |i| i.scroll(at, dir, amount)).await
    }

    pub async fn cursor(&self) -> Result<(i32, i32)> {
        self.input(|i| i.cursor()).await
    }

    pub async fn type_text(&self, text: String, delay: Duration) -> Result<u32> {
        let sent = self.input(move |i| i.type_text(&text, delay)).await?;
        self.schedule_keymap_restore();
        Ok(sent)
    }

    pub async fn key(&self, combo: String, repeat: u32) -> Result<u32> {
        let sent = self.input(move |i| i.key(&combo, repeat)).await?;
        self.schedule_keymap_restore();
        Ok(sent)
    }

    pub async fn key_hold(&self, combo: String, press: bool) -> Result<u32> {
        let sent = self.input(move |i| i.key_hold(&combo, press)).await?;
        self.schedule_keymap_restore();
        Ok(sent)
    }

    /// Restores borrowed keycodes once they have been idle for the configured time; a later
    /// typing call pushes the restore further out, so back-to-back calls remap only once. A
    /// restore that waits for the focused client to read the mapping is tried again later.
    fn schedule_keymap_restore(&self) {
        let input = self.input.clone();
        let after = self.config.keymap_restore;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(after).await;
                let input = input.clone();
                let again = tokio::task::spawn_blocking(move || {
                    let mut guard = input.lock().unwrap_or_else(|p| p.into_inner());
                    match guard.get_mut().map(|i| i.restore_keymap_if_idle(after)) {
                        Some(Ok(again)) => again,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "keymap restore failed");
                            false
                        }
                        None => false,
                    }
                })
                .await;
                if !matches!(again, Ok(true)) {
                    break;
                }
            }
        });
    }

    pub async fn exec(
        &self,
        spec: Spec,
        live: Option<tokio::sync::mpsc::Sender<(Stream, Vec<u8>)>>,
    ) -> Result<Outcome> {
        self.runner.run(spec.validate()?, live).await
    }
}

/// Microseconds since the Unix epoch.
pub fn epoch_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
