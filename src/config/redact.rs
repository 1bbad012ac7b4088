//! Taking secrets out of URLs before a setting is printed or quoted in an
//! error: database URLs, Mithril's URL, a JWKS URL.

use percent_encoding::percent_decode_str;

/// Query parameters whose value is a secret, by a part of their
/// (percent-decoded, lower-cased) name.
const SECRET_PARAMETERS: [&str; 5] = ["pass", "token", "secret", "key", "sig"];

/// `text` with every URL's password and secret query values replaced by
/// `[redacted]`: `postgres://gate:[redacted]@db/m?password=[redacted]`.
/// A URL runs to the next space, quote or backtick; its user info runs to
/// the last `@` in it, so a password holding an unencoded `?`, `/`, `#`
/// or `@` is redacted whole.
pub fn urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .unwrap_or(tail.len());
        out.push_str(&url(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// One setting's value as a URL, whole: spaces and quotes in it are part of
/// the password, not its end.
pub fn value(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", url(rest)),
        None => text.to_owned(),
    }
}

/// One URL after its `scheme://`.
fn url(after_scheme: &str) -> String {
    let rest = match after_scheme.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:[redacted]@{host}"),
            None => format!("{user_info}@{host}"),
        },
        None => after_scheme.to_owned(),
    };
    let Some((base, query)) = rest.split_once('?') else {
        return rest;
    };
    let parameters: Vec<String> = query
        .split('&')
        .map(|parameter| match parameter.split_once('=') {
            Some((name, _)) if is_secret(name) => format!("{name}=[redacted]"),
            _ => parameter.to_owned(),
        })
        .collect();
    format!("{base}?{}", parameters.join("&"))
}

fn is_secret(name: &str) -> bool {
    let name = percent_decode_str(name).decode_utf8_lossy().to_lowercase();
    SECRET_PARAMETERS.iter().any(|part| name.contains(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_parameters_are_redacted() {
        for (text, redacted) in [
            (
                "postgres://gate:hunter2@db:5432/mithril",
                "postgres://gate:[redacted]@db:5432/mithril",
            ),
            (
                "postgres://gate:hun?ter2@db:5432/mithril",
                "postgres://gate:[redacted]@db:5432/mithril",
            ),
            (
                "postgres://gate:hun/ter#2@x@db/m",
                "postgres://gate:[redacted]@db/m",
            ),
            (
                "postgres://gate@db/m?sslmode=require&pass%77ord=hunter2",
                "postgres://gate@db/m?sslmode=require&pass%77ord=[redacted]",
            ),
            (
                "`https://auth/jwks?access_token=hunter2&kid=a` is not",
                "`https://auth/jwks?access_token=[redacted]&kid=a` is not",
            ),
            ("sqlite:mithril.db", "sqlite:mithril.db"),
            ("http://mithril:4000", "http://mithril:4000"),
        ] {
            assert_eq!(urls(text), redacted, "{text}");
        }
        assert_eq!(
            value("http://gate:hun ter2@mithril"),
            "http://gate:[redacted]@mithril"
        );
    }
}
