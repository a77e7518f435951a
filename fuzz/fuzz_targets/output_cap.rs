//! Output capping while reading: whatever the output, the chunks a pipe delivers it in and the
//! cap, at most `cap` bytes pass, as a prefix, cut on a character boundary for UTF-8 output, and
//! the flag says exactly whether anything was dropped (`output::check_capping`).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use orgo_agent::output::check_capping;

/// Text, so that multi-byte characters meet the cap and the chunk boundaries, or any bytes.
#[derive(Debug, Arbitrary)]
enum Output {
    Text(String),
    Bytes(Vec<u8>),
}

fuzz_target!(|input: (u16, Output, Vec<u8>)| {
    let (cap, output, sizes) = input;
    let bytes = match output {
        Output::Text(text) => text.into_bytes(),
        Output::Bytes(bytes) => bytes,
    };
    let sizes: Vec<usize> = sizes.into_iter().map(usize::from).collect();
    check_capping(&bytes, &sizes, usize::from(cap));
});
