//! Every request body the API parses (`check_body` for each route): any bytes give a checked
//! action or a 400 naming the problem, never a panic and never another kind of error.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use orgo_gateway::api::{body_routes, check_body};
use orgo_gateway::error::ApiError;

static ROUTES: LazyLock<Vec<&'static str>> = LazyLock::new(body_routes);

fuzz_target!(|input: (u8, &[u8])| {
    let (route, body) = input;
    let route = ROUTES[usize::from(route) % ROUTES.len()];
    match check_body(route, body) {
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
