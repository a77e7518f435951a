//! Typing into real clients, read back from what they wrote: an xterm in a UTF-8 locale running
//! `cat`, and a Tk text widget, on a desktop with openbox. Control characters follow their one
//! rule, a keymap another program loads between calls is typed through, and text with far more
//! distinct characters than there are spare keycodes arrives exact however the batches fall.

mod common;

use common::{Agent, Typist};
use orgo_proto::v1 as pb;

/// One typing desktop at a time: these tests ask whether every character arrives, and five
/// desktops with their clients on two cores starve the clients for seconds on end, which
/// measures the machine rather than the typing (see `inflight`'s bound on a busy client).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A desktop with openbox, held alone for the test's duration.
async fn desktop() -> (tokio::sync::MutexGuard<'static, ()>, Agent) {
    let turn = ONE_AT_A_TIME.lock().await;
    (turn, Agent::start("openbox").await)
}

async fn type_text(agent: &mut Agent, text: &str) -> Result<u32, tonic::Status> {
    agent
        .client
        .type_text(pb::TypeTextRequest {
            text: text.into(),
            delay_millis: 0,
        })
        .await
        .map(|r| r.into_inner().sent)
}

/// `n` distinct CJK ideographs, starting `from` places into the block.
fn ideographs(from: u32, n: u32) -> String {
    (0x4e00 + from..0x4e00 + from + n)
        .map(|c| char::from_u32(c).unwrap())
        .collect()
}

/// Asserts `got == want`, saying where they part: the texts are long.
fn assert_typed(got: &str, want: &str, what: &str) {
    if got == want {
        return;
    }
    let (g, w): (Vec<char>, Vec<char>) = (got.chars().collect(), want.chars().collect());
    let at = g.iter().zip(&w).take_while(|(a, b)| a == b).count();
    let around = |v: &[char]| {
        v[at.saturating_sub(3)..(at + 8).min(v.len())]
            .iter()
            .collect::<String>()
    };
    panic!(
        "{what}: typed text differs from character {at} on: got {:?}, wanted {:?} ({} vs {} characters)",
        around(&g),
        around(&w),
        g.len(),
        w.len()
    );
}

#[tokio::test]
async fn control_characters_follow_one_rule() {
    let (_turn, mut agent) = desktop().await;
    let xterm = Typist::xterm(&agent.display, &agent.dir);
    xterm.wait_ready(&mut agent.client).await;

    // CR LF, a lone CR and LF are one line break each; the terminal's line discipline applies
    // BackSpace and keeps the tab.
    let sent = type_text(&mut agent, "a\r\nb\rc\nxy\u{8}z\tw\r\n").await.unwrap();
    assert_eq!(sent, 15, "every character of the text is counted");
    assert_eq!(xterm.lines(4), "a\nb\nc\nxz\tw\n");

    for (text, at) in [("ok\u{1b}[A", 3), ("\u{0}", 1), ("é\u{7f}", 2), ("\r\n\u{85}", 3)] {
        let err = type_text(&mut agent, text).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{text:?}");
        let ch = text.chars().nth(at - 1).unwrap() as u32;
        let want = format!("U+{ch:04X} at character {at};");
        assert!(err.message().contains(&want), "{text:?}: {}", err.message());
    }
    // A refused text types nothing, not even its start.
    type_text(&mut agent, "end\n").await.unwrap();
    assert_eq!(xterm.lines(5), "a\nb\nc\nxz\tw\nend\n");
}

/// Field report: `type "ü\n"`, then `setxkbmap us` within the restore time, then `type "ü\n"`
/// gave `ü\n\n`: the reload emptied the borrowed keycode the second call pressed.
#[tokio::test]
async fn a_keymap_loaded_between_calls_is_typed_through() {
    let (_turn, mut agent) = desktop().await;
    let xterm = Typist::xterm(&agent.display, &agent.dir);
    xterm.wait_ready(&mut agent.client).await;
    for round in 0..3 {
        type_text(&mut agent, "ü\n").await.unwrap();
        // The reload comes once the first line has arrived: what it is about is the next
        // call, which must press a keycode the reload did not empty. (A reload while the
        // terminal has the press queued, not yet translated, loses it; no typist can stop
        // another program changing the keymap under a client.)
        assert_eq!(xterm.lines(1), "ü\n", "round {round}");
        let reload = agent.bash("setxkbmap us", 10_000).await;
        assert_eq!(
            reload.exit_code,
            Some(0),
            "{}",
            String::from_utf8_lossy(&reload.stderr)
        );
        type_text(&mut agent, "ü€\n").await.unwrap();
        assert_eq!(xterm.lines(2), "ü\nü€\n", "round {round}");
        xterm.clear();
    }
}

/// Runs of text with ten times as many distinct characters as a keymap batch holds: every
/// batch rebinds keycodes the last one pressed, which the client must have translated first.
async fn many_distinct_characters_arrive_exact(typist: fn(&str, &std::path::Path) -> Typist) {
    let (_turn, mut agent) = desktop().await;
    let client = typist(&agent.display, &agent.dir);
    client.wait_ready(&mut agent.client).await;
    for run in 0..20 {
        let text = ideographs(run * 600, 600);
        client.clear();
        type_text(&mut agent, &format!("{text}\n")).await.unwrap();
        assert_typed(&client.lines(1), &format!("{text}\n"), &format!("run {run}"));
    }
}

#[tokio::test]
async fn many_distinct_characters_arrive_exact_in_xterm() {
    many_distinct_characters_arrive_exact(Typist::xterm).await;
}

#[tokio::test]
async fn many_distinct_characters_arrive_exact_in_tk() {
    many_distinct_characters_arrive_exact(Typist::tk).await;
}

/// Every script's line (about 100 characters no keyboard key gives: three keymap batches) 50
/// times in a row, then 100 distinct ideographs in one call, each read back whole.
async fn the_corpus_arrives_exact_every_time(typist: fn(&str, &std::path::Path) -> Typist) {
    let (_turn, mut agent) = desktop().await;
    let client = typist(&agent.display, &agent.dir);
    client.wait_ready(&mut agent.client).await;
    let text: String = common::CORPUS.iter().map(|l| format!("{l}\n")).collect();
    let lines = text.matches('\n').count();
    for round in 0..50 {
        client.clear();
        type_text(&mut agent, &text).await.unwrap();
        assert_typed(&client.lines(lines), &text, &format!("round {round}"));
    }
    client.clear();
    let ideographs = ideographs(9000, 100) + "\n";
    type_text(&mut agent, &ideographs).await.unwrap();
    assert_typed(
        &client.lines(1),
        &ideographs,
        "100 distinct ideographs in one call",
    );
}

#[tokio::test]
async fn the_corpus_arrives_exact_every_time_in_xterm() {
    the_corpus_arrives_exact_every_time(Typist::xterm).await;
}

#[tokio::test]
async fn the_corpus_arrives_exact_every_time_in_tk() {
    the_corpus_arrives_exact_every_time(Typist::tk).await;
}

/// Field report: 20 calls of 60 distinct characters each, back to back; the next call rebound
/// keycodes before the client had translated the last call's presses.
#[tokio::test]
async fn back_to_back_calls_arrive_exact() {
    let (_turn, mut agent) = desktop().await;
    let xterm = Typist::xterm(&agent.display, &agent.dir);
    xterm.wait_ready(&mut agent.client).await;
    let calls: Vec<String> = (0..20).map(|i| ideographs(16 + i * 60, 60) + "\n").collect();
    for text in &calls {
        type_text(&mut agent, text).await.unwrap();
    }
    assert_typed(&xterm.lines(calls.len()), &calls.concat(), "20 calls");
}
