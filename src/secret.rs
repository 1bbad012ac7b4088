//! Values that must never be printed: bearer tokens, api-keys, database URLs.
//!
//! [`Secret`] has a redacting `Debug`, no `Display` and no `Serialize`, so a
//! secret can reach a log line, an error message or a panic only by someone
//! calling [`Secret::expose`] on purpose. Keep the calls to `expose` few and
//! next to the place that needs the raw value (a query parameter, a hash).

use std::fmt;

/// A string that is redacted wherever it could be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one place that must send or hash it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("s3cr3t-token-value");
        let printed = format!("{secret:?} {:?}", Some(&secret));
        assert!(!printed.contains("s3cr3t"), "{printed}");
    }
}
