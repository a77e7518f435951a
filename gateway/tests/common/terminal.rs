//! A terminal on a desktop, used through the API the way an agent uses one: opened with `bash`
//! (`xterm … &`), waited for until it is on screen, typed into, read back, and looked at in
//! screenshots. Each runtime's tests run these same checks on its own desktops, so "the images
//! work for what they ship" means the same thing everywhere.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;

use super::inproc::Gateway;

/// What an agent types, one line per script: Latin accents, Greek, Cyrillic, CJK, Hangul, emoji.
pub const CORPUS: &[&str] = &[
    "Crème brûlée, naïve façade, Ångström, Øresund, ß, ¿Qué?",
    "Ελληνικά: αβγδε ΑΒΓΔΕ ωψχ",
    "Кириллица: привет МИР, съешь же ещё",
    "中文输入测试，日本語のテキスト",
    "한국어 텍스트 입력 시험",
    "emoji 😀🚀👍🏽 🎉",
];

/// How long a terminal may take to appear and its input to arrive: generous, since a busy
/// machine is slow, and only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(30);

/// A window's inside (without the window manager's frame), in screen coordinates.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// The window titled `title` from `xwininfo`'s answer, once it is viewable with a real size.
fn mapped(xwininfo: &str) -> Option<Window> {
    let field = |name: &str| -> Option<u32> {
        xwininfo
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let window = Window {
        x: field("Absolute upper-left X:")?,
        y: field("Absolute upper-left Y:")?,
        width: field("Width:")?,
        height: field("Height:")?,
    };
    (xwininfo.contains("Map State: IsViewable") && window.width > 1 && window.height > 1).then_some(window)
}

/// Opens `xterm -title TITLE ARGS &` with `bash`, as an agent starts programs, and waits until
/// the window is mapped with a real size: keys pressed before that go nowhere.
pub async fn open_xterm(gw: &Gateway, key: &str, computer: &str, title: &str, args: &str) -> Window {
    gw.bash(key, computer, &format!("xterm -title {title} {args} &"), None)
        .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info = gw
            .bash(key, computer, &format!("xwininfo -name {title}"), None)
            .await;
        let text = info["output"].as_str().unwrap_or_default();
        if let Some(window) = mapped(text) {
            return window;
        }
        assert!(
            Instant::now() < deadline,
            "the xterm never mapped with a real size: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A terminal opened with `bash` takes the corpus typed into it, every line intact: `cat`
/// writes what the terminal received to a file that `bash` reads back.
pub async fn the_corpus_typed_into_a_terminal_arrives_intact(gw: &Gateway, key: &str, computer: &str) {
    let w = open_xterm(gw, key, computer, "orgo-corpus", "-e 'cat > /tmp/corpus'").await;
    // Focus it as an agent would, by clicking into it.
    gw.ok(
        "POST",
        &format!("{computer}/click"),
        key,
        Some(json!({"x": w.x + w.width / 2, "y": w.y + w.height / 2})),
    )
    .await;
    for line in CORPUS {
        gw.ok(
            "POST",
            &format!("{computer}/type"),
            key,
            Some(json!({ "text": format!("{line}\n") })),
        )
        .await;
    }
    let want = CORPUS.join("\n") + "\n";
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = gw.bash(key, computer, "cat /tmp/corpus", None).await;
        let got = got["output"].as_str().unwrap_or_default().to_string();
        if got.lines().count() >= CORPUS.len() || Instant::now() >= deadline {
            assert_eq!(got, want, "what the terminal received");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A region of the screen as RGB rows, from a lossless screenshot.
struct Pixels {
    width: usize,
    rgb: Vec<[u8; 3]>,
}

impl Pixels {
    async fn of(gw: &Gateway, key: &str, computer: &str, w: Window) -> Pixels {
        let shot = gw
            .ok(
                "GET",
                &format!(
                    "{computer}/screenshot?format=png&x={}&y={}&width={}&height={}",
                    w.x, w.y, w.width, w.height
                ),
                key,
                None,
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["image"].as_str().unwrap())
            .unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let samples = info.color_type.samples();
        assert_eq!(
            (info.width, info.height),
            (w.width, w.height),
            "the screenshot covers the window"
        );
        Pixels {
            width: info.width as usize,
            rgb: buf[..info.buffer_size()]
                .chunks(samples)
                .map(|p| [p[0], p[1], p[2]])
                .collect(),
        }
    }

    /// Which pixels of the box from x0 to x1 (all rows) are ink: dark on the white background.
    fn ink(&self, x0: usize, x1: usize) -> Vec<bool> {
        self.rgb
            .chunks(self.width)
            .flat_map(|row| row[x0..x1].iter().map(|p| p.iter().any(|&c| c < 128)))
            .collect()
    }
}

/// CJK text shown in a terminal puts ink on the screen where its glyphs are, each character its
/// own shape (a missing font draws blanks, a placeholder the same box for every character),
/// and none in the cells after the text.
pub async fn cjk_in_a_terminal_puts_ink_on_screen(gw: &Gateway, key: &str, computer: &str) {
    const CJK: &str = "中文日本語한국어";
    // One row, each character two cells wide, then blank cells.
    const COLUMNS: usize = 20;
    // xterm's default internal border around the cells, in pixels.
    const BORDER: usize = 2;
    let chars = CJK.chars().count();
    let w = open_xterm(
        gw,
        key,
        computer,
        "orgo-ink",
        // `\033[?25l` hides the cursor, which would be ink of its own after the text.
        &format!("-geometry {COLUMNS}x1 -bg white -fg black -e 'printf \"\\033[?25l{CJK}\"; exec sleep 600'"),
    )
    .await;
    let cell = (w.width as usize - 2 * BORDER) / COLUMNS;
    let cells = |from: usize, to: usize| (BORDER + from * cell, BORDER + to * cell);
    let glyphs_of = |pixels: &Pixels| -> Vec<Vec<bool>> {
        (0..chars)
            .map(|i| {
                let (x0, x1) = cells(2 * i, 2 * i + 2);
                pixels.ink(x0, x1)
            })
            .collect()
    };
    // The text is drawn a moment after the window maps, and a loaded X server may show it
    // drawn part way (one character's fallback font loaded, the next not yet): wait until every
    // character has ink, or give up and let the checks below say which one has none.
    let deadline = Instant::now() + PATIENCE;
    let (pixels, glyphs) = loop {
        let pixels = Pixels::of(gw, key, computer, w).await;
        let glyphs = glyphs_of(&pixels);
        if glyphs.iter().all(|g| g.contains(&true)) || Instant::now() >= deadline {
            break (pixels, glyphs);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (c, glyph) in CJK.chars().zip(&glyphs) {
        let ink = glyph.iter().filter(|&&i| i).count();
        assert!(ink >= 10, "{c:?} put {ink} pixels of ink on the screen: {w:?}");
    }
    let mut shapes = glyphs.clone();
    shapes.sort();
    shapes.dedup();
    assert_eq!(shapes.len(), chars, "every character has a shape of its own");
    // One cell after the text for a glyph wider than its cells, then nothing.
    let (x0, x1) = cells(2 * chars + 1, COLUMNS);
    assert!(
        !pixels.ink(x0, x1).contains(&true),
        "ink after the text: {w:?}, cell {cell} px"
    );
}
