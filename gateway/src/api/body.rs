//! Request bodies over the configured limit (`max_body_bytes`) get a 413 that every client can
//! read. Answering at once and closing would leave the rest of the body unread in the socket:
//! the kernel then resets the connection, and a client that sends its whole body before reading
//! (Python's urllib, many SDKs) sees `BrokenPipeError` instead of the answer. So the body is
//! read and thrown away — up to [`DRAIN_BYTES`] and [`DRAIN_TIME`] — before the 413 is sent
//! with `Connection: close`. A client that asked `Expect: 100-continue` (curl, for large
//! bodies) has sent nothing yet: it gets the 413 at once and never sends the body.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::error::ApiError;

/// The most of an oversized body read (and dropped) so the client can read the 413; past
/// this the connection is closed right after the answer.
pub const DRAIN_BYTES: u64 = 64 << 20;
/// The longest an oversized body is read for; a client trickling it gets the 413 then.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Middleware: refuses a body over `limit` bytes with a readable 413, passes the rest on,
/// read whole. A body without a declared length is counted while it is read and refused the
/// same way.
pub async fn refuse_oversized(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let limit = limit as u64;
    match declared_length(request.headers()) {
        Some(length) if length > limit => {
            if !expects_continue(request.headers()) && length <= DRAIN_BYTES {
                drain(request.into_body(), DRAIN_BYTES).await;
            }
            too_large(limit)
        }
        // Within the limit, the body is read whole before any handler runs: an answer sent
        // before the client has sent all of it (an authentication or database error comes
        // back at once) would make the server close the connection without saying so, and a
        // client reusing it would see it reset.
        _ => {
            let (parts, body) = request.into_parts();
            match read_within(body, limit).await {
                Ok(bytes) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
                Err(Unread::TooLarge(rest)) => {
                    drain(rest, DRAIN_BYTES).await;
                    too_large(limit)
                }
                Err(Unread::Broken) => {
                    ApiError::BadRequest("the request body could not be read".into()).into_response()
                }
            }
        }
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// Why a body of no declared length was not read whole.
enum Unread {
    /// It passed the limit; the rest of it is still to be read.
    TooLarge(Body),
    /// The client broke off or sent a malformed chunk.
    Broken,
}

/// Reads a body of no declared length, giving up at the first byte past `limit`.
async fn read_within(body: Body, limit: u64) -> Result<Vec<u8>, Unread> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| Unread::Broken)?;
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(Unread::TooLarge(Body::from_stream(stream)));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Reads and drops up to `most` bytes of a body, for at most [`DRAIN_TIME`].
async fn drain(body: Body, most: u64) {
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    let reading = async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len() as u64;
            if read > most {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, reading).await;
}

fn too_large(limit: u64) -> Response {
    let mut response =
        ApiError::TooLarge(format!("request body is too large: the limit is {limit} bytes")).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_lengths_and_expectations_are_read_from_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(declared_length(&headers), None);
        headers.insert(header::CONTENT_LENGTH, "12000000".parse().unwrap());
        assert_eq!(declared_length(&headers), Some(12_000_000));
        headers.insert(header::CONTENT_LENGTH, "twelve".parse().unwrap());
        assert_eq!(declared_length(&headers), None);
        assert!(!expects_continue(&headers));
        headers.insert(header::EXPECT, "100-Continue".parse().unwrap());
        assert!(expects_continue(&headers));
    }
}
