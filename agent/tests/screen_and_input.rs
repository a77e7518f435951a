//! The agent against a real Xvfb: screenshots show what is on screen, pointer and keyboard
//! input arrive as the right X events at the right places, Unicode text arrives intact.

mod common;

use common::{Agent, Got, TestWindow};
use orgo_proto::v1 as pb;

const RED: u32 = 0xff0000;
const BLUE: u32 = 0x0000ff;

fn rgb_at(png_bytes: &[u8], x: usize, y: usize) -> [u8; 3] {
    let mut dec = png::Decoder::new(std::io::Cursor::new(png_bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    let info = dec.next_frame(&mut buf).unwrap();
    let i = (y * info.width as usize + x) * 3;
    [buf[i], buf[i + 1], buf[i + 2]]
}

#[tokio::test]
async fn screenshot_shows_the_painted_window() {
    let mut agent = Agent::start("none").await;
    let _w = TestWindow::open(&agent.display, 100, 50, 200, 100, RED, BLUE);

    let png = agent
        .client
        .screenshot(pb::ScreenshotRequest {
            format: pb::ImageFormat::Png.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((png.width, png.height), (1280, 800));
    assert_eq!(rgb_at(&png.image, 110, 60), [255, 0, 0], "left half red");
    assert_eq!(rgb_at(&png.image, 290, 140), [0, 0, 255], "right half blue");
    assert_eq!(rgb_at(&png.image, 99, 49), [0, 0, 0], "outside is the black root");

    let jpeg = agent
        .client
        .screenshot(pb::ScreenshotRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pb::ImageFormat::try_from(jpeg.format), Ok(pb::ImageFormat::Jpeg));
    let img = turbojpeg::decompress(&jpeg.image, turbojpeg::PixelFormat::RGB).unwrap();
    assert_eq!((img.width, img.height), (1280, 800));
    let px = |x: usize, y: usize| &img.pixels[(y * img.width + x) * 3..][..3];
    assert!(
        px(150, 100)[0] > 230 && px(150, 100)[2] < 25,
        "JPEG red: {:?}",
        px(150, 100)
    );
    assert!(
        px(250, 100)[2] > 230 && px(250, 100)[0] < 25,
        "JPEG blue: {:?}",
        px(250, 100)
    );

    let region = agent
        .client
        .screenshot(pb::ScreenshotRequest {
            format: pb::ImageFormat::Png.into(),
            region: Some(pb::Region {
                x: 200,
                y: 50,
                width: 100,
                height: 100,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((region.width, region.height), (100, 100));
    assert_eq!(rgb_at(&region.image, 0, 0), [0, 0, 255]);

    let small = agent
        .client
        .screenshot(pb::ScreenshotRequest {
            max_width: 640,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((small.width, small.height), (640, 400));

    let bad = agent
        .client
        .screenshot(pb::ScreenshotRequest {
            region: Some(pb::Region {
                x: 1200,
                y: 0,
                width: 200,
                height: 10,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("does not fit"), "{}", bad.message());
}

#[tokio::test]
async fn pointer_actions_arrive_where_they_were_aimed() {
    let mut agent = Agent::start("none").await;
    let w = TestWindow::open(&agent.display, 100, 100, 400, 300, RED, BLUE);
    let at = |x, y| Some(pb::Point { x, y });

    agent
        .client
        .click(pb::ClickRequest {
            at: at(150, 160),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = w.take_when(|e| e.iter().any(|g| matches!(g, Got::Release { .. })));
    let buttons: Vec<&Got> = got.iter().filter(|g| !matches!(g, Got::Motion { .. })).collect();
    assert_eq!(
        buttons,
        [
            &Got::Press {
                button: 1,
                x: 50,
                y: 60
            },
            &Got::Release {
                button: 1,
                x: 50,
                y: 60
            }
        ]
    );

    agent
        .client
        .click(pb::ClickRequest {
            at: at(300, 200),
            button: pb::MouseButton::Right.into(),
            count: 2,
        })
        .await
        .unwrap();
    let got = w.take_when(|e| e.iter().filter(|g| matches!(g, Got::Release { .. })).count() == 2);
    let presses: Vec<&Got> = got.iter().filter(|g| matches!(g, Got::Press { .. })).collect();
    assert_eq!(
        presses,
        [
            &Got::Press {
                button: 3,
                x: 200,
                y: 100
            },
            &Got::Press {
                button: 3,
                x: 200,
                y: 100
            }
        ]
    );

    agent
        .client
        .click(pb::ClickRequest {
            at: at(120, 120),
            button: pb::MouseButton::Middle.into(),
            count: 3,
        })
        .await
        .unwrap();
    let got = w.take_when(|e| e.iter().filter(|g| matches!(g, Got::Release { .. })).count() == 3);
    assert_eq!(
        got.iter()
            .filter(|g| matches!(
                g,
                Got::Press {
                    button: 2,
                    x: 20,
                    y: 20
                }
            ))
            .count(),
        3
    );

    agent
        .client
        .drag(pb::DragRequest {
            path: vec![pb::Point { x: 110, y: 110 }, pb::Point { x: 400, y: 300 }],
            button: pb::MouseButton::Left.into(),
            duration_millis: 100,
        })
        .await
        .unwrap();
    let got = w.take_when(|e| e.iter().any(|g| matches!(g, Got::Release { .. })));
    let press = got
        .iter()
        .position(|g| {
            *g == Got::Press {
                button: 1,
                x: 10,
                y: 10,
            }
        })
        .expect("press at start");
    let release = got
        .iter()
        .position(|g| {
            *g == Got::Release {
                button: 1,
                x: 300,
                y: 200,
            }
        })
        .expect("release at end");
    let moves = got[press..release]
        .iter()
        .filter(|g| matches!(g, Got::Motion { .. }))
        .count();
    assert!(moves >= 10, "a drag moves through the path, saw {moves} motions");

    for (dir, button) in [
        (pb::ScrollDirection::Down, 5),
        (pb::ScrollDirection::Up, 4),
        (pb::ScrollDirection::Left, 6),
        (pb::ScrollDirection::Right, 7),
    ] {
        agent
            .client
            .scroll(pb::ScrollRequest {
                at: at(200, 250),
                direction: dir.into(),
                amount: 0,
            })
            .await
            .unwrap();
        let got = w.take_when(|e| e.iter().filter(|g| matches!(g, Got::Release { .. })).count() == 3);
        let clicks = got
            .iter()
            .filter(|g| {
                **g == Got::Press {
                    button,
                    x: 100,
                    y: 150,
                }
            })
            .count();
        assert_eq!(
            clicks, 3,
            "scroll {dir:?} defaults to 3 clicks of button {button}"
        );
    }

    let pos = agent
        .client
        .cursor_position(pb::CursorPositionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pos.position, Some(pb::Point { x: 200, y: 250 }));

    let off = agent
        .client
        .click(pb::ClickRequest {
            at: at(1280, 5),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(off.code(), tonic::Code::InvalidArgument);
    assert!(off.message().contains("outside the screen"), "{}", off.message());
}

#[tokio::test]
async fn separate_clicks_at_one_spot_are_not_merged() {
    let mut agent = Agent::start_with("none", &["--double-click-ms", "300"]).await;
    let w = TestWindow::open(&agent.display, 0, 0, 200, 200, RED, BLUE);
    let click = pb::ClickRequest {
        at: Some(pb::Point { x: 50, y: 50 }),
        ..Default::default()
    };
    agent.client.click(click).await.unwrap();
    agent.client.click(click).await.unwrap();
    agent
        .client
        .click(pb::ClickRequest { count: 2, ..click })
        .await
        .unwrap();
    w.take_when(|e| e.iter().filter(|g| matches!(g, Got::Release { .. })).count() == 4);
    let t = w.press_times.lock().unwrap().clone();
    assert_eq!(t.len(), 4);
    assert!(
        t[1] - t[0] >= 300,
        "separate clicks {} ms apart would merge",
        t[1] - t[0]
    );
    assert!(
        t[2] - t[1] >= 300,
        "a double click after a click must not join it"
    );
    assert!(
        t[3] - t[2] < 300,
        "the two clicks of a double click are inside the interval"
    );
}

const SHIFT_MASK: u16 = 1;
const CONTROL_MASK: u16 = 4;
const MOD1_MASK: u16 = 8;
const MOD4_MASK: u16 = 64;

#[tokio::test]
async fn every_key_name_presses_the_right_keysym_and_modifiers() {
    let mut agent = Agent::start("none").await;
    let w = TestWindow::open(&agent.display, 0, 0, 300, 300, RED, BLUE);
    // (combo, keysym of the final key as the client reads it, modifier mask on that press)
    let table: &[(&str, u32, u16)] = &[
        ("Enter", 0xff0d, 0),
        ("enter", 0xff0d, 0),
        ("Return", 0xff0d, 0),
        ("Tab", 0xff09, 0),
        ("Escape", 0xff1b, 0),
        ("esc", 0xff1b, 0),
        ("space", 0x20, 0),
        ("BackSpace", 0xff08, 0),
        ("delete", 0xffff, 0),
        ("Home", 0xff50, 0),
        ("End", 0xff57, 0),
        ("Page_Up", 0xff55, 0),
        ("pagedown", 0xff56, 0),
        ("Up", 0xff52, 0),
        ("down", 0xff54, 0),
        ("left", 0xff51, 0),
        ("right", 0xff53, 0),
        ("F1", 0xffbe, 0),
        ("f12", 0xffc9, 0),
        ("F13", 0xffca, 0),
        ("F24", 0xffd5, 0),
        ("ctrl+c", 'c' as u32, CONTROL_MASK),
        ("ctrl+v", 'v' as u32, CONTROL_MASK),
        ("ctrl+a", 'a' as u32, CONTROL_MASK),
        ("alt+tab", 0xff09, MOD1_MASK),
        ("ctrl+shift+i", 'I' as u32, CONTROL_MASK | SHIFT_MASK),
        ("CTRL+SHIFT+I", 'I' as u32, CONTROL_MASK | SHIFT_MASK),
        ("super+e", 'e' as u32, MOD4_MASK),
        ("shift+a", 'A' as u32, SHIFT_MASK),
        ("ctrl+alt+Delete", 0xffff, CONTROL_MASK | MOD1_MASK),
        ("plus", '+' as u32, SHIFT_MASK),
        ("ctrl++", '+' as u32, CONTROL_MASK | SHIFT_MASK),
        ("XF86AudioMute", 0x1008ff12, 0),
        ("é", 0xe9, 0),
    ];
    for &(combo, keysym, mask) in table {
        agent
            .client
            .press_key(pb::KeyRequest {
                combo: combo.into(),
                repeat: 0,
            })
            .await
            .unwrap();
        let n_keys = combo.matches('+').count().max(1);
        let got = w.take_when(|e| e.iter().filter(|g| matches!(g, Got::KeyUp { .. })).count() >= n_keys);
        let last = got
            .iter()
            .rev()
            .find_map(|g| match g {
                Got::Key { keysym, state, .. } => Some((*keysym, *state)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{combo}: no key press arrived"));
        assert_eq!(
            last.0, keysym,
            "{combo}: keysym {:#x}, wanted {keysym:#x}",
            last.0
        );
        assert_eq!(
            last.1 & (SHIFT_MASK | CONTROL_MASK | MOD1_MASK | MOD4_MASK),
            mask,
            "{combo}: modifiers"
        );
    }

    let bad = agent
        .client
        .press_key(pb::KeyRequest {
            combo: "ctrl+hyperdrive".into(),
            repeat: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("\"hyperdrive\""), "{}", bad.message());

    agent
        .client
        .key_down(pb::KeyRequest {
            combo: "shift".into(),
            repeat: 0,
        })
        .await
        .unwrap();
    agent
        .client
        .press_key(pb::KeyRequest {
            combo: "b".into(),
            repeat: 0,
        })
        .await
        .unwrap();
    agent
        .client
        .key_up(pb::KeyRequest {
            combo: "shift".into(),
            repeat: 0,
        })
        .await
        .unwrap();
    let got = w.take_when(|e| e.iter().filter(|g| matches!(g, Got::KeyUp { .. })).count() >= 2);
    assert_eq!(
        TestWindow::text(&got),
        "B",
        "a held Shift applies to the next key"
    );
}

#[tokio::test]
async fn unicode_text_arrives_intact_every_time() {
    let mut agent = Agent::start("openbox").await;
    let w = TestWindow::open(&agent.display, 0, 0, 300, 300, RED, BLUE);
    for round in 0..20 {
        for line in common::CORPUS {
            let sent = agent
                .client
                .type_text(pb::TypeTextRequest {
                    text: (*line).into(),
                    delay_millis: 0,
                })
                .await
                .unwrap()
                .into_inner()
                .sent;
            let want = line.chars().count();
            assert_eq!(sent as usize, want);
            let got = w.take_when(|e| {
                e.iter()
                    .filter(|g| matches!(g, Got::Key { keysym, .. } if !(0xffe1..=0xffee).contains(keysym)))
                    .count()
                    >= want
            });
            assert_eq!(TestWindow::text(&got), *line, "round {round}");
        }
    }
}

#[tokio::test]
async fn borrowed_keycodes_are_restored_after_typing() {
    let mut agent = Agent::start_with("none", &["--keymap-restore-ms", "50"]).await;
    let w = TestWindow::open(&agent.display, 0, 0, 100, 100, RED, BLUE);
    let before = keymap(&w);
    agent
        .client
        .type_text(pb::TypeTextRequest {
            text: "ж€😀".into(),
            delay_millis: 0,
        })
        .await
        .unwrap();
    let _ = w.take_when(|e| e.iter().filter(|g| matches!(g, Got::Key { .. })).count() >= 3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while keymap(&w) != before {
        assert!(std::time::Instant::now() < deadline, "keymap not restored");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// What every keycode gives without and with Shift in the first group: the part of the core
/// keymap clients read. (The server's XKB may re-spread groups in the core table on any change,
/// so the raw table is not compared.)
fn keymap(w: &TestWindow) -> Vec<[u32; 2]> {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::ConnectionExt;
    let (min, max) = (w.conn.setup().min_keycode, w.conn.setup().max_keycode);
    let r = w
        .conn
        .get_keyboard_mapping(min, max - min + 1)
        .unwrap()
        .reply()
        .unwrap();
    r.keysyms
        .chunks(r.keysyms_per_keycode as usize)
        .map(|row| [row[0], row.get(1).copied().unwrap_or(0)])
        .collect()
}

#[tokio::test]
async fn health_and_screen_info() {
    let mut agent = Agent::start("openbox").await;
    let h = agent
        .client
        .health(pb::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(h.display_ready);
    assert_eq!(h.version, env!("CARGO_PKG_VERSION"));
    assert!(h.display.starts_with(':'));
    let s = agent
        .client
        .screen_info(pb::ScreenInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.width, s.height, s.depth), (1280, 800, 24));
}

#[tokio::test]
async fn watch_screen_sends_a_frame_when_the_screen_changes() {
    let mut agent = Agent::start("none").await;
    let mut frames = agent
        .client
        .watch_screen(pb::WatchScreenRequest {
            max_fps: 30,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = frames.message().await.unwrap().expect("a first frame at once");
    assert_eq!((first.width, first.height, first.sequence), (1280, 800, 1));
    let black = turbojpeg::decompress(&first.jpeg, turbojpeg::PixelFormat::RGB).unwrap();
    assert!(
        black.pixels[..3].iter().all(|&c| c < 20),
        "the bare root is black"
    );

    let _w = TestWindow::open(&agent.display, 0, 0, 400, 400, RED, RED);
    let next = frames.message().await.unwrap().expect("a frame after the change");
    assert_eq!(next.sequence, 2, "nothing was sent while the screen stood still");
    let img = turbojpeg::decompress(&next.jpeg, turbojpeg::PixelFormat::RGB).unwrap();
    let px = &img.pixels[(200 * img.width + 200) * 3..][..3];
    assert!(px[0] > 230 && px[1] < 25, "the new window shows: {px:?}");
    assert!(next.captured_at_micros >= first.captured_at_micros);

    // A still screen sends nothing; a second viewer gets its own first frame and then the same
    // changes as the first.
    // (The window's own drawing may still trail its mapping by a frame or two.)
    let mut trailing = 0;
    while tokio::time::timeout(std::time::Duration::from_millis(500), frames.message())
        .await
        .is_ok()
    {
        trailing += 1;
        assert!(trailing < 5, "frames keep coming while the screen stands still");
    }
    let mut second = agent
        .client
        .watch_screen(pb::WatchScreenRequest {
            max_fps: 30,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.message().await.unwrap().unwrap().sequence, 1);
    let _w2 = TestWindow::open(&agent.display, 500, 0, 200, 200, RED, RED);
    for stream in [&mut frames, &mut second] {
        let mut shown = false;
        for _ in 0..5 {
            let f = stream
                .message()
                .await
                .unwrap()
                .expect("a frame after the second change");
            let img = turbojpeg::decompress(&f.jpeg, turbojpeg::PixelFormat::RGB).unwrap();
            let px = &img.pixels[(100 * img.width + 600) * 3..][..3];
            if px[0] > 230 && px[1] < 25 {
                shown = true;
                break;
            }
        }
        assert!(shown, "the second window shows in each stream");
    }
}

/// A still screen's screenshot is the last one again, with no capture or encode (XDamage says
/// nothing was drawn), and never stale: one pixel changed between two screenshots, thousands
/// of times, is always seen.
#[tokio::test]
async fn screenshots_of_a_still_screen_are_reused_and_never_stale() {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ChangeGCAux, ConnectionExt as _, CreateGCAux, Rectangle};

    let mut agent = Agent::start("none").await;
    let (conn, screen) = x11rb::connect(Some(&agent.display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let gc = conn.generate_id().unwrap();
    conn.create_gc(gc, root, &CreateGCAux::new().foreground(0))
        .unwrap();
    let asked = pb::ScreenshotRequest {
        format: pb::ImageFormat::Png.into(),
        region: Some(pb::Region {
            x: 0,
            y: 0,
            width: 64,
            height: 64,
        }),
        ..Default::default()
    };
    // A fixed-seed LCG: the same spots and colours every run.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as u32
    };
    let mut reused = 0;
    for round in 0..3000 {
        let (x, y, rgb) = (next() % 64, next() % 64, next() & 0xff_ffff);
        conn.change_gc(gc, &ChangeGCAux::new().foreground(rgb)).unwrap();
        let pixel = Rectangle {
            x: x as i16,
            y: y as i16,
            width: 1,
            height: 1,
        };
        conn.poly_fill_rectangle(root, gc, &[pixel]).unwrap();
        // Drawn: the server has handled it when the round trip returns.
        conn.get_input_focus().unwrap().reply().unwrap();
        let shot = agent.client.screenshot(asked).await.unwrap().into_inner();
        let want = [(rgb >> 16) as u8, (rgb >> 8) as u8, rgb as u8];
        assert_eq!(
            rgb_at(&shot.image, x as usize, y as usize),
            want,
            "round {round}: ({x}, {y})"
        );
        let again = agent.client.screenshot(asked).await.unwrap().into_inner();
        assert_eq!(again.image, shot.image, "round {round}: nothing changed");
        if again.capture_micros == 0 && again.encode_micros == 0 {
            reused += 1;
        }
    }
    // Nothing else draws on this screen: each second screenshot is the first one again.
    assert_eq!(reused, 3000, "still screenshots were captured again");
}
