//! The request id that ties a caller's request to our logs and answers.
//!
//! A caller's `x-request-id` is kept when it is one header of 1 to 200
//! characters from `A-Z a-z 0-9 - _ . :` (what gateways and tracers send);
//! otherwise a new UUID is made. The id goes back as the `x-request-id`
//! header and as `meta.request_id`, and names the request in the log.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use uuid::Uuid;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const MAX_LEN: usize = 200;

/// A request id that is safe to echo: in a header, a log line, JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The caller's id when it is acceptable, else a fresh one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(X_REQUEST_ID).iter();
        match (values.next(), values.next()) {
            (Some(value), None) if is_acceptable(value.as_bytes()) => Self(value.clone()),
            _ => Self::generate(),
        }
    }

    pub fn generate() -> Self {
        let id = Uuid::new_v4().hyphenated().to_string();
        Self(HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("unavailable")))
    }

    pub fn as_str(&self) -> &str {
        // INVARIANT: only ASCII letters, digits and `-_.:` are ever held.
        self.0.to_str().unwrap_or_default()
    }

    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

fn is_acceptable(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_for(values: &[&str]) -> RequestId {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_REQUEST_ID, HeaderValue::from_str(value).unwrap());
        }
        RequestId::from_headers(&headers)
    }

    #[test]
    fn keeps_an_acceptable_caller_id() {
        assert_eq!(id_for(&["req-42_a.b:c"]).as_str(), "req-42_a.b:c");
        let longest = "a".repeat(MAX_LEN);
        assert_eq!(id_for(&[&longest]).as_str(), longest);
    }

    #[test]
    fn replaces_missing_repeated_or_unsafe_ids() {
        let too_long = "a".repeat(MAX_LEN + 1);
        for values in [
            &[][..],
            &["a", "b"],
            &[""],
            &["a b"],
            &["<script>"],
            &["a\"b"],
            &[&too_long],
        ] {
            let id = id_for(values);
            assert!(Uuid::try_parse(id.as_str()).is_ok(), "{values:?} -> {id:?}");
        }
    }
}
