//! `mithril-gate config`: the settings `serve` would run with, after flags,
//! environment variables, the config file and the defaults have had their
//! say, written as a config file would hold them, with secrets redacted.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use clap::CommandFactory;
use ipnet::IpNet;
use serde::{Serialize, Serializer};

use super::{Cli, LogFormat, ServeArgs};
use crate::secret::Secret;

const HEADER: &str = "\
# The configuration `mithril-gate serve` runs with: flags, then MITHRIL_GATE_*
# variables, then the config file, then the defaults. Passwords are redacted.
";

/// Everything `serve` reads, in one table.
#[derive(Serialize)]
struct Effective<'a> {
    log: &'a str,
    log_format: LogFormat,
    #[serde(flatten)]
    serve: &'a ServeArgs,
}

/// The effective configuration as TOML, followed by a comment naming the
/// settings that are not set. It reads back as a config file.
pub fn effective(
    log: &str,
    log_format: LogFormat,
    serve: &ServeArgs,
) -> Result<String, toml::ser::Error> {
    let effective = Effective {
        log,
        log_format,
        serve,
    };
    let table = toml::to_string(&effective)?;
    let mut text = format!("{HEADER}{table}");
    let given: BTreeSet<String> = toml::from_str::<toml::Table>(&text)
        .map(|table| table.keys().cloned().collect())
        .unwrap_or_default();
    for key in settings().iter().filter(|key| !given.contains(*key)) {
        let _ = writeln!(text, "# {key} is not set");
    }
    Ok(text)
}

/// The name of every setting, as a config file spells it: the long flag
/// with `_` for `-`, whatever the command.
pub fn settings() -> BTreeSet<String> {
    let command = Cli::command();
    let serve = command
        .get_subcommands()
        .find(|sub| sub.get_name() == "serve");
    let arguments = command
        .get_arguments()
        .chain(serve.into_iter().flat_map(|serve| serve.get_arguments()));
    arguments
        .map(|arg| arg.get_id().as_str().to_owned())
        .filter(|id| !matches!(id.as_str(), "config" | "help" | "version"))
        .collect()
}

/// A duration as the settings take it: `1m`, `500ms`.
pub(super) fn duration<S: Serializer>(value: &Duration, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_str(&humantime::format_duration(*value).to_string())
}

/// Networks as the settings take them: a list of strings.
pub(super) fn networks<S: Serializer>(value: &[IpNet], to: S) -> Result<S::Ok, S::Error> {
    to.collect_seq(value.iter().map(ToString::to_string))
}

/// The database URL with its password redacted.
pub(super) fn database_url<S: Serializer>(
    value: &Option<Secret>,
    to: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(url) => to.serialize_str(&super::redact::value(url.expose())),
        None => to.serialize_none(),
    }
}

/// A URL setting (Mithril's, a JWKS URL) without user info or secret
/// query values.
pub(super) fn url<S: Serializer>(value: &Option<String>, to: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(url) => to.serialize_str(&super::redact::value(url)),
        None => to.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{Command, FileConfig};
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/mithril-gate.example.toml");

    fn printed(args: &[&str]) -> String {
        let cli = Cli::load_from(["mithril-gate"].iter().chain(args)).unwrap();
        let Command::Config(serve) = &cli.command else {
            panic!("parsed {:?}", cli.command);
        };
        effective(&cli.log, cli.log_format, serve).unwrap()
    }

    /// The example with every `# key = value` line made a setting.
    fn example_with_every_key() -> String {
        EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if is_setting(rest) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn is_setting(line: &str) -> bool {
        line.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
    }

    #[test]
    fn the_example_holds_every_setting_once_and_each_parses() {
        let text = example_with_every_key();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let keys: BTreeSet<String> = table.keys().cloned().collect();
        assert_eq!(keys, settings());
        // The file's own parser: unknown keys and bad values are refused.
        toml::from_str::<FileConfig>(&text).unwrap();
        let commented = EXAMPLE
            .lines()
            .filter(|l| l.starts_with("# ") && is_setting(&l[2..]));
        assert_eq!(commented.count(), settings().len(), "one line per setting");
    }

    #[test]
    fn the_example_gives_the_defaults_where_there_are_some() {
        let table: toml::Table = toml::from_str(&example_with_every_key()).unwrap();
        let command = Cli::command();
        let serve = command.find_subcommand("serve").unwrap();
        let defaults: BTreeMap<String, String> = command
            .get_arguments()
            .chain(serve.get_arguments())
            .filter_map(|arg| {
                let default = arg.get_default_values().first()?.to_str()?.to_owned();
                Some((arg.get_id().to_string(), default))
            })
            .collect();
        assert!(defaults.len() > 20, "{defaults:?}");
        for (key, default) in defaults {
            let written = match &table[&key] {
                toml::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            assert_eq!(written, default, "`{key}` in the example");
        }
    }

    #[test]
    fn the_example_as_shipped_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let path = path.display().to_string();
        assert_eq!(
            printed(&["config", "--config", &path]),
            printed(&["config"])
        );
    }

    #[test]
    fn the_printed_configuration_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.toml");
        std::fs::write(
            &first,
            "token_cache_ttl = \"90s\"\nlog_allows = true\nlog_format = \"json\"\n\
             trusted_proxies = [\"10.0.0.0/8\"]\nupstream = \"http://127.0.0.1:4000\"\n\
             schema = \"rules/schema\"\npolicies = \"rules/policies\"\n",
        )
        .unwrap();
        let once = printed(&["config", "--config", first.to_str().unwrap()]);
        assert!(once.contains("token_cache_ttl = \"1m 30s\""), "{once}");
        assert!(
            once.contains("trusted_proxies = [\"10.0.0.0/8\"]"),
            "{once}"
        );
        assert!(once.contains("# database_url is not set"), "{once}");
        let second = dir.path().join("second.toml");
        std::fs::write(&second, &once).unwrap();
        // The first file's relative paths are printed resolved against it,
        // so the second file names the same folders.
        let rules = dir.path().join("rules/policies").display().to_string();
        assert!(once.contains(&format!("policies = \"{rules}\"")), "{once}");
        let twice = printed(&["config", "--config", second.to_str().unwrap()]);
        assert_eq!(twice, once);
        let keys = toml::from_str::<toml::Table>(&once).unwrap().len();
        let unset = once.lines().filter(|l| l.ends_with(" is not set")).count();
        assert_eq!(keys + unset, settings().len());
    }

    #[test]
    fn flags_outrank_the_file_in_the_printed_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\nidle_timeout = \"2m\"\n",
        )
        .unwrap();
        let path = path.display().to_string();
        let text = printed(&["config", "--config", &path, "--listen", "0.0.0.0:8080"]);
        assert!(text.contains("listen = \"0.0.0.0:8080\""), "{text}");
        assert!(text.contains("idle_timeout = \"2m\""), "{text}");
    }

    #[test]
    fn database_passwords_are_redacted() {
        for (url, redacted) in [
            (
                "postgres://gate:hunter2@db:5432/mithril",
                "postgres://gate:[redacted]@db:5432/mithril",
            ),
            (
                "postgres://gate:hun/ter@2@db/mithril?sslmode=require&password=hunter2",
                "postgres://gate:[redacted]@db/mithril?sslmode=require&password=[redacted]",
            ),
            (
                "postgres://gate@db/m?sslpassword=x",
                "postgres://gate@db/m?sslpassword=[redacted]",
            ),
            ("sqlite:///data/mithril.db", "sqlite:///data/mithril.db"),
        ] {
            assert_eq!(crate::config::redact::value(url), redacted);
        }
        let text = printed(&["config", "--database-url", "postgres://u:hunter2@db/m"]);
        assert!(
            text.contains("database_url = \"postgres://u:[redacted]@db/m\""),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
}
