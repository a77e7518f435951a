//! Output capping while reading: whatever the chunks a pipe delivers and the cap, exactly the
//! first `cap` bytes pass, in order, and the flag says whether anything was dropped.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use libfuzzer_sys::fuzz_target;
use orgo_agent::exec::{Stream, read_capped};
use tokio::sync::mpsc;

fuzz_target!(|input: (u16, Vec<Vec<u8>>)| {
    let (cap, chunks) = input;
    let cap = usize::from(cap);
    let all: Vec<u8> = chunks.concat();
    let pipe = tokio_util::io::StreamReader::new(futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::from(c))),
    ));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (kept, flagged) = rt.block_on(async {
        let (tx, mut rx) = mpsc::channel(2);
        let flag = Arc::new(AtomicBool::new(false));
        let reader = read_capped(pipe, Stream::Stdout, cap, tx, flag.clone());
        let collect = async {
            let mut kept = Vec::new();
            while let Some((_, chunk)) = rx.recv().await {
                assert!(!chunk.is_empty());
                kept.extend_from_slice(&chunk);
            }
            kept
        };
        let ((), kept) = tokio::join!(reader, collect);
        (kept, flag.load(Ordering::Relaxed))
    });
    assert_eq!(kept, &all[..all.len().min(cap)]);
    assert_eq!(flagged, all.len() > cap);
});
