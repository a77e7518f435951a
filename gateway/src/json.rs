//! JSON request input: bodies parsed into typed values with the wrong field named, the number
//! helpers serde lacks (integers written `153.0`), and [`Invalid`], the one error of input that
//! cannot be taken as given (a 400 at the HTTP edge, INVALID_ARGUMENT over gRPC).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Input that cannot be taken as given; the sentence names the field and what it may be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Parses a JSON body (an empty one counts as `{}`), naming the field that is wrong.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Invalid> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    // JSON is UTF-8, and serde_json checks only the strings it keeps: a bad byte in an
    // ignored field would otherwise pass.
    if std::str::from_utf8(text).is_err() {
        return Err(Invalid("request body is not valid UTF-8".into()));
    }
    // serde would also read a struct from an array of its fields; the API takes objects only.
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Invalid("request body must be a JSON object".into()));
    }
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            Invalid(format!("request body is not valid JSON for this route: {inner}"))
        } else {
            Invalid(format!("field {path:?}: {inner}"))
        }
    })
}

/// Parses a URL query string (`a=1&b=x`), naming the parameter that is wrong.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, Invalid> {
    let pairs = form_urlencoded::parse(query.as_bytes());
    serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs))
        .map_err(|e| Invalid(format!("query: {}: {}", e.path(), e.inner())))
}

/// An integer field: JSON integers, and numbers with no fraction (`153.0`), which JSON Schema
/// also counts as integers; anything else is refused with the field named.
pub fn int<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    let whole = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Some(i),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
        _ => None,
    };
    whole
        .and_then(|i| T::try_from(i).ok())
        .ok_or_else(|| D::Error::custom(format!("expected an integer in range, not {n}")))
}

/// `int` for optional fields; `null` counts as absent.
pub fn opt_int<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap<T: TryFrom<i64>>(#[serde(deserialize_with = "int")] T);
    Ok(Option::<Wrap<T>>::deserialize(d)?.map(|Wrap(v)| v))
}

/// A nested object (or null): serde would also read a struct from an array of its fields.
pub fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Map<String, Value>>::deserialize(d)? {
        None => Ok(None),
        Some(map) => serde_path_to_error::deserialize(Value::Object(map))
            .map(Some)
            .map_err(|e| D::Error::custom(format!("{}: {}", e.path(), e.inner()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Probe {
        #[serde(deserialize_with = "int")]
        n: i32,
        #[serde(default, deserialize_with = "opt_int")]
        m: Option<u8>,
    }

    #[test]
    fn bodies_are_objects_of_utf8_with_the_wrong_field_named() {
        let ok: Probe = parse_body(br#"{"n": 153.0, "m": null}"#).unwrap();
        assert_eq!((ok.n, ok.m), (153, None));
        let err = |body: &[u8]| parse_body::<Probe>(body).unwrap_err().0;
        assert!(err(b"[1]").contains("JSON object"));
        assert!(err(b"{\"n\": \"\xff\"}").contains("UTF-8"));
        assert!(err(br#"{"n": 1.5}"#).contains("\"n\""));
        assert!(err(br#"{"n": 1, "m": 300}"#).contains("\"m\""));
        assert!(err(b"  ").contains("missing field `n`"));
    }

    #[test]
    fn queries_name_the_wrong_parameter() {
        #[derive(Debug, Deserialize)]
        struct Q {
            quality: Option<u32>,
        }
        assert_eq!(parse_query::<Q>("quality=7").unwrap().quality, Some(7));
        let e = parse_query::<Q>("quality=abc").unwrap_err().0;
        assert!(e.starts_with("query: quality:"), "{e}");
    }
}
