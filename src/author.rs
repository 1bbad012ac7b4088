//! What policy authors run: `check`, `test` and `authorize`.
//!
//! Each command returns what it would print and its exit code, so the
//! binary stays a thin shell and tests call the commands directly. Exit
//! codes are shared: 0 when all is well, 1 when a case fails (or a file is
//! not formatted), 2 when a schema, policy or suite cannot be loaded.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy_formatter::{Config as FormatConfig, policies_str_to_pretty};

use crate::config::{AuthorizeArgs, CheckArgs, EXIT_POLICY, TestArgs};
use crate::fixtures::suite::{self, AdHoc};
use crate::fixtures::{self, Bench, Outcome, Report, Suite};
use crate::policy::{Explanation, LoadError, Loaded, PolicyPaths, PolicyStore};

/// Exit code when a case fails or a file is not formatted.
pub const EXIT_FAILED: i32 = 1;

/// A command's output and exit code.
#[derive(Debug)]
pub struct Done {
    pub output: String,
    pub code: i32,
}

impl Done {
    fn new(output: String, code: i32) -> Self {
        Self { output, code }
    }

    /// Every problem, then their count; exit 2.
    fn load_errors(mut output: String, errors: &[LoadError]) -> Self {
        for error in errors {
            let _ = writeln!(output, "error: {error}");
        }
        let _ = writeln!(output, "{} problem(s) found", errors.len());
        Self::new(output, EXIT_POLICY)
    }
}

/// The validator's and the gateway's warnings about loaded policies, a
/// line each.
fn warnings(loaded: &Loaded) -> String {
    let mut lines = String::new();
    for warning in &loaded.warnings {
        let _ = writeln!(lines, "warning: {warning}");
    }
    lines
}

/// The schema and policies, and whatever else was asked, loaded together
/// so that every problem of every file is listed in one run.
fn load_all<T>(
    paths: &PolicyPaths,
    other: impl FnOnce() -> Result<T, Vec<LoadError>>,
) -> Result<(Loaded, T), (String, Vec<LoadError>)> {
    let loaded = paths.load().map_err(|errors| errors.0);
    let other = other();
    match (loaded, other) {
        (Ok(loaded), Ok(other)) => Ok((loaded, other)),
        (loaded, other) => {
            let warnings = loaded.as_ref().map(warnings).unwrap_or_default();
            let mut errors = loaded.err().unwrap_or_default();
            errors.extend(other.err().unwrap_or_default());
            Err((warnings, errors))
        }
    }
}

/// The policies and the suites at `suites` (none when empty), with the
/// suites' expectations checked against the policies' `@id`s.
fn load_with_suites(
    paths: &PolicyPaths,
    suites: &[PathBuf],
) -> Result<(Loaded, Vec<Suite>), (String, Vec<LoadError>)> {
    let (suites, mut suite_errors) = if suites.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        fixtures::load(suites)
    };
    let mut errors = Vec::new();
    let loaded = match paths.load() {
        Ok(loaded) => {
            let ids = loaded.policies.ids();
            suite_errors.extend(fixtures::unknown_policies(&suites, &ids));
            Some(loaded)
        }
        Err(found) => {
            errors.extend(found.0);
            None
        }
    };
    suite_errors.sort_by(|a, b| (&a.file, a.position).cmp(&(&b.file, b.position)));
    errors.extend(suite_errors);
    match loaded {
        Some(loaded) if errors.is_empty() => Ok((loaded, suites)),
        loaded => Err((loaded.as_ref().map(warnings).unwrap_or_default(), errors)),
    }
}

/// `check`: parse and strictly validate everything, then the layout.
pub fn check(args: &CheckArgs) -> Done {
    let paths = args.policy.paths();
    // Layout first: a rewritten file is what the load below reads.
    let mut output = String::new();
    let (unformatted, code) = layout(&paths, args.fix, &mut output);
    let (loaded, suites) = match load_with_suites(&paths, &args.suites) {
        Ok(both) => both,
        Err((warnings, errors)) => return Done::load_errors(output + &warnings, &errors),
    };
    output.push_str(&warnings(&loaded));
    let ids = loaded.policies.ids();
    let _ = write!(
        output,
        "{}: {} polic{} ({}), generation {}",
        if unformatted == 0 {
            "ok"
        } else {
            "not formatted"
        },
        ids.len(),
        if ids.len() == 1 { "y" } else { "ies" },
        ids.join(", "),
        loaded.policies.generation()
    );
    if !suites.is_empty() {
        let cases: usize = suites.iter().map(|s| s.cases.len()).sum();
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let _ = write!(
            output,
            "; {} suite{}, {cases} case{}",
            suites.len(),
            plural(suites.len()),
            plural(cases)
        );
    }
    output.push('\n');
    Done::new(output, code)
}

/// Compares each policy file with Cedar's formatter's layout; with `fix`,
/// rewrites those that differ. Returns how many differ (unfixed) and the
/// exit code.
fn layout(paths: &PolicyPaths, fix: bool, output: &mut String) -> (usize, i32) {
    // Cedar's own CLI formats with these.
    let config = FormatConfig {
        line_width: 80,
        indent_width: 2,
    };
    let mut unformatted = 0;
    let mut code = 0;
    for file in paths.policy_files() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(pretty) = policies_str_to_pretty(&text, &config) else {
            continue;
        };
        if pretty == text {
            continue;
        }
        if fix {
            match rewrite(&file, &pretty) {
                Ok(()) => {
                    let _ = writeln!(output, "formatted {}", file.display());
                }
                Err(e) => {
                    let _ = writeln!(output, "error: {}: cannot rewrite: {e}", file.display());
                    unformatted += 1;
                    code = EXIT_POLICY;
                }
            }
            continue;
        }
        let line = first_difference(&text, &pretty);
        let _ = writeln!(
            output,
            "{}:{line}:1: not laid out as Cedar's formatter would; \
             `mithril-gate check --fix` rewrites it",
            file.display()
        );
        unformatted += 1;
        code = code.max(EXIT_FAILED);
    }
    (unformatted, code)
}

/// Replaces the file whole, so that a watcher never reads half of it: a
/// new file with the old one's permissions, renamed over it. Through a
/// symlink, the file it names is replaced and the link kept. A read-only
/// file is left alone.
fn rewrite(file: &Path, text: &str) -> std::io::Result<()> {
    let target = std::fs::canonicalize(file)?;
    let permissions = std::fs::metadata(&target)?.permissions();
    if permissions.readonly() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the file is read-only",
        ));
    }
    let mut temporary = target.as_os_str().to_owned();
    temporary.push(".formatting");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, text)?;
    std::fs::set_permissions(&temporary, permissions)?;
    std::fs::rename(&temporary, &target)
}

fn first_difference(a: &str, b: &str) -> usize {
    a.lines()
        .zip(b.lines())
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.lines().count().min(b.lines().count()))
        + 1
}

/// `test`: run the suites' cases through the gate.
pub async fn test(args: &TestArgs) -> Done {
    let paths = args.policy.paths();
    let (loaded, suites) = match load_with_suites(&paths, &args.paths) {
        Ok(both) => both,
        Err((output, errors)) => return Done::load_errors(output, &errors),
    };
    // The warnings `check` gives explain many a failing case (a client
    // type that can never match), so they come first here too.
    let mut output = warnings(&loaded);
    let store = Arc::new(PolicyStore::new(loaded.policies));
    let outcomes = match fixtures::run_all(&suites, &store, args.filter.as_deref()).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            let output = format!("error: cannot fill the fixtures' database: {e}\n");
            return Done::new(output, EXIT_POLICY);
        }
    };
    if outcomes.is_empty() {
        let filter = args.filter.as_deref().unwrap_or_default();
        let _ = writeln!(output, "no case matches `{}`", filter.escape_debug());
        return Done::new(output, EXIT_FAILED);
    }
    let report = Report(&outcomes);
    let _ = writeln!(output, "{report}");
    if args.coverage {
        let policies = store.current();
        let uncovered = fixtures::uncovered(&policies.ids(), &outcomes);
        if uncovered.is_empty() {
            output.push_str("coverage: every policy determined at least one case\n");
        } else {
            let _ = writeln!(
                output,
                "coverage: no case was determined by {}",
                uncovered.join(", ")
            );
        }
    }
    let code = if report.failed() > 0 { EXIT_FAILED } else { 0 };
    Done::new(output, code)
}

/// `authorize`: one request, explained.
pub async fn authorize(args: &AuthorizeArgs) -> Done {
    let paths = args.policy.paths();
    let suite = || match &args.suite {
        Some(file) => suite::load(file),
        None => suite::adhoc(&AdHoc {
            method: &args.method,
            path: args.path.as_deref().unwrap_or_default(),
            client_type: args.client_type.as_deref().unwrap_or_default(),
            client_id: args.client_id,
            scope: &args.scope,
            broker_scope: args.broker_scope.as_deref(),
            connection: !args.no_connection,
        }),
    };
    let (loaded, suite) = match load_all(&paths, suite) {
        Ok(both) => both,
        Err((output, errors)) => return Done::load_errors(output, &errors),
    };
    let wanted = args.case.as_deref().unwrap_or("request");
    let Some(case) = suite.cases.iter().find(|case| case.name == wanted) else {
        let output = format!(
            "error: {}: no case is named `{wanted}`\n",
            suite.file.display()
        );
        return Done::new(output, EXIT_POLICY);
    };
    let store = Arc::new(PolicyStore::new(loaded.policies));
    let outcome = match Bench::new(&suite, store.clone()).await {
        Ok(bench) => bench.run(&suite.file, case).await,
        Err(e) => {
            let output = format!("error: cannot fill the fixtures' database: {e}\n");
            return Done::new(output, EXIT_POLICY);
        }
    };
    if outcome.record.status == 0 {
        let output = format!("error: {}\n", outcome.failures.join("; "));
        return Done::new(output, crate::config::EXIT_USAGE);
    }
    let policies = store.current();
    let explanation = match (&outcome.record.principal, outcome.record.connection_id) {
        (Some(principal), Some(connection_id)) => {
            let route = crate::route::Route::ConnectionDetails {
                client_id: outcome.record.owner_id.unwrap_or_default(),
                connection_id,
            };
            policies.explain(principal, &route).ok()
        }
        _ => None,
    };
    Done::new(explain(&suite, case, &outcome, explanation.as_ref()), 0)
}

fn explain(
    suite: &Suite,
    case: &fixtures::Case,
    outcome: &Outcome,
    explanation: Option<&Explanation>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "request     {} {}", case.method, case.path);
    if let Some(principal) = &outcome.record.principal {
        let scopes: Vec<&str> = principal.scopes.iter().collect();
        let _ = write!(
            out,
            "caller      client type `{}`, token scope `{}`",
            principal.client_type,
            scopes.join(" ")
        );
        if let Some(broker) = &principal.broker {
            let scopes: Vec<&str> = broker.scopes.iter().collect();
            let _ = write!(
                out,
                ", through an MIS with broker scope `{}`",
                scopes.join(" ")
            );
        }
        out.push('\n');
    }
    match explanation {
        Some(e) => decision(&mut out, e),
        None => {
            let stage = match (outcome.record.route, outcome.record.auth_reason) {
                (None, _) => "the path matched no route".to_owned(),
                (Some(_), Some(reason)) => format!("the token was refused ({reason})"),
                (Some(_), None) if outcome.record.status == 405 => {
                    "the method is not allowed".to_owned()
                }
                _ => "the request ended before the policies".to_owned(),
            };
            let _ = writeln!(out, "policies    not asked: {stage}");
        }
    }
    let body = serde_json::from_slice::<serde_json::Value>(&outcome.body)
        .ok()
        .and_then(|json| serde_json::to_string_pretty(&json).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&outcome.body).into_owned());
    let _ = writeln!(out, "answer      {}", outcome.record.status);
    let _ = writeln!(out, "{body}");
    if suite.file != Path::new("<command line>") {
        for failure in &outcome.failures {
            let _ = writeln!(out, "differs from the case: {failure}");
        }
    }
    out
}

fn decision(out: &mut String, e: &Explanation) {
    let _ = writeln!(
        out,
        "principal   {} in {}",
        e.principal,
        e.parents.join(", ")
    );
    let _ = writeln!(out, "action      {}", e.action);
    let _ = writeln!(out, "resource    {} {{ owner: {} }}", e.resource, e.owner);
    let scopes: Vec<String> = e.scopes.iter().map(|s| format!("{s:?}")).collect();
    let _ = writeln!(out, "context     {{ scopes: [{}] }}", scopes.join(", "));
    let verdict = if e.decision.allowed { "allow" } else { "deny" };
    let _ = writeln!(out, "decision    {verdict}");
    if e.determining.is_empty() {
        let _ = writeln!(
            out,
            "determined  by no policy: nothing permits it (default deny)"
        );
    }
    for note in &e.determining {
        let _ = writeln!(
            out,
            "determined  by {} {} at {}",
            note.effect, note.id, note.place
        );
        for (key, value) in &note.annotations {
            let _ = writeln!(out, "              @{key}({value:?})");
        }
    }
    for error in &e.decision.errors {
        let _ = writeln!(out, "error       {error}");
    }
}
