//! Reading credentials from request headers, strictly.
//!
//! Exactly one `Authorization` header, scheme `Bearer` (any case), one
//! token made of RFC 6750 `b64token` characters; at most one `api-key`
//! header. Anything else is refused before a token source is asked, so an
//! ambiguous request can never be verified one way and forwarded another.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use super::Credentials;
use crate::secret::Secret;

/// The longest token or api-key read. Mithril's values are at most 255
/// characters and a signed JWT a few kilobytes; anything longer is not a
/// credential and is not worth hashing.
const MAX_CREDENTIAL_LEN: usize = 8 * 1024;

/// Why the headers hold no usable credentials. Messages never include a
/// header's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("authorization header with a bearer token is required")]
    Missing,
    #[error("authorization header must be sent once")]
    Repeated,
    #[error("authorization header must be `Bearer` followed by one token")]
    Malformed,
    #[error("api-key header must be sent at most once, as one value of visible characters")]
    ApiKeyMalformed,
}

/// Reads the bearer token and the optional api-key.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, HeaderError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(HeaderError::Missing)?;
    if values.next().is_some() {
        return Err(HeaderError::Repeated);
    }
    let token = bearer_token(value.as_bytes()).ok_or(HeaderError::Malformed)?;
    Ok(Credentials {
        token: Secret::new(token),
        api_key: api_key(headers)?,
    })
}

/// Trailing spaces and tabs are not part of a field value (HTTP/1.1
/// parsers drop them, HTTP/2 peers may not): read both the same.
fn trim_ows(value: &str) -> &str {
    value.trim_end_matches([' ', '\t'])
}

fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = trim_ows(std::str::from_utf8(value).ok()?);
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && is_b64token(token)).then_some(token)
}

/// RFC 6750's `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
/// "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && token.len() <= MAX_CREDENTIAL_LEN
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

fn api_key(headers: &HeaderMap) -> Result<Option<Secret>, HeaderError> {
    let mut values = headers.get_all("api-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(HeaderError::ApiKeyMalformed);
    }
    let key = trim_ows(value.to_str().map_err(|_| HeaderError::ApiKeyMalformed)?);
    let valid = !key.is_empty()
        && key.len() <= MAX_CREDENTIAL_LEN
        && key.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(Some(Secret::new(key)))
    } else {
        Err(HeaderError::ApiKeyMalformed)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    fn token_of(pairs: &[(&str, &[u8])]) -> Result<String, HeaderError> {
        credentials(&headers(pairs)).map(|c| c.token.expose().to_owned())
    }

    #[test]
    fn reads_a_bearer_token_in_any_case() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let value = format!("{scheme} abc123");
            assert_eq!(
                token_of(&[("authorization", value.as_bytes())]).unwrap(),
                "abc123"
            );
        }
        assert_eq!(
            token_of(&[("authorization", b"Bearer abc \t ")]).unwrap(),
            "abc"
        );
        let jwt = b"Bearer eyJh.eyJz.c2ln-_~+/==";
        assert_eq!(
            token_of(&[("authorization", jwt)]).unwrap(),
            "eyJh.eyJz.c2ln-_~+/=="
        );
    }

    #[test]
    fn refuses_missing_repeated_and_malformed_headers() {
        assert_eq!(token_of(&[]), Err(HeaderError::Missing));
        assert_eq!(
            token_of(&[
                ("authorization", b"Bearer a"),
                ("authorization", b"Bearer a")
            ]),
            Err(HeaderError::Repeated)
        );
        let malformed: [&[u8]; 11] = [
            b"Bearer",
            b"Bearer ",
            b"Bearer a b",
            b"Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            b"Bearertoken",
            b"Bearer\ttoken",
            b"Bearer ===",
            b"Bearer a=b",
            b"Bearer a,b",
            b"Bearer \xd0\xb0",
            b"Token abc",
        ];
        for value in malformed {
            assert_eq!(
                token_of(&[("authorization", value)]),
                Err(HeaderError::Malformed),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        let long = format!("Bearer {}", "a".repeat(MAX_CREDENTIAL_LEN + 1));
        assert_eq!(
            token_of(&[("authorization", long.as_bytes())]),
            Err(HeaderError::Malformed)
        );
    }

    #[test]
    fn reads_at_most_one_api_key() {
        let auth: (&str, &[u8]) = ("authorization", b"Bearer t");
        let none = credentials(&headers(&[auth])).unwrap();
        assert!(none.api_key.is_none());
        let one = credentials(&headers(&[auth, ("api-key", b"k3y_-")])).unwrap();
        assert_eq!(one.api_key.unwrap().expose(), "k3y_-");
        for bad in [
            vec![("api-key", &b""[..])],
            vec![("api-key", b"a b")],
            vec![("api-key", b"a"), ("api-key", b"a")],
        ] {
            let mut pairs = vec![auth];
            pairs.extend(bad);
            assert_eq!(
                credentials(&headers(&pairs)).unwrap_err(),
                HeaderError::ApiKeyMalformed
            );
        }
    }

    #[test]
    fn errors_never_carry_the_header_value() {
        let err = credentials(&headers(&[("authorization", b"Bearer s3cr3t x")])).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cr3t"));
    }
}
