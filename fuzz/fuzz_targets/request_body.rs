//! Every request body the API parses (`check_body` for each route): any bytes give a checked
//! command or a 400 naming the problem, never a panic and never another kind of error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orgo_gateway::api::{BODY_ROUTES, check_body};
use orgo_gateway::error::ApiError;

fuzz_target!(|input: (u8, &[u8])| {
    let (route, body) = input;
    let route = BODY_ROUTES[usize::from(route) % BODY_ROUTES.len()];
    match check_body(route, &bytes::Bytes::copy_from_slice(body)) {
        Ok(()) => assert!(
            body.iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_none_or(|&b| b == b'{'),
            "{route}: accepted a body that is not an object"
        ),
        Err(ApiError::BadRequest(message)) => assert!(!message.is_empty()),
        Err(other) => panic!("{route}: {other:?}"),
    }
});
