//! Reading the schema and the policies from disk, and refusing them whole
//! when anything is wrong.
//!
//! A load either yields a complete, strictly validated [`Policies`] or the
//! list of every problem found, each with its file, line and column. Nothing
//! in between: a half-loaded policy set never serves a request.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, PolicyId, PolicySet, Schema, SchemaFragment, ValidationMode, Validator,
};
use miette::Diagnostic;
use sha2::{Digest, Sha256};

use super::{Names, Policies, PolicyInfo};

/// Where the schema and the policies live.
#[derive(Debug, Clone)]
pub struct PolicyPaths {
    /// Folder of `*.cedarschema` (or `*.cedarschema.json`) files.
    pub schema_dir: PathBuf,
    /// Folder of `*.cedar` policy files.
    pub policies_dir: PathBuf,
}

/// One problem in the schema or the policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    /// 1-based line and column of the problem, when it has a place.
    pub position: Option<(usize, usize)>,
    pub message: String,
    pub help: Option<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A file name may hold a line break: printed raw, it would forge a
        // log line.
        let file = self.file.display().to_string();
        if file.contains(char::is_control) {
            write!(f, "{}", file.escape_debug())?;
        } else {
            write!(f, "{file}")?;
        }
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n    help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem a load found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        write!(
            f,
            "{count} problem{} in schema and policies",
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

/// A loaded policy set and what was worth saying about it.
#[derive(Debug)]
pub struct Loaded {
    pub policies: Policies,
    /// Validator warnings (a policy that can never apply, say): the set is
    /// usable, but the author should look.
    pub warnings: Vec<LoadError>,
}

/// A file read from disk.
struct Source {
    path: PathBuf,
    text: String,
}

/// The names of schema files and of policy files.
const SCHEMA_FILES: [&str; 2] = [".cedarschema", ".cedarschema.json"];
const POLICY_FILES: [&str; 1] = [".cedar"];

impl PolicyPaths {
    /// Reads, parses and strictly validates everything.
    pub fn load(&self) -> Result<Loaded, LoadErrors> {
        let mut errors = Vec::new();
        let (schema_files, policy_files) = self.read(&mut errors);
        let schema = parse_schema(&self.schema_dir, &schema_files, &mut errors);
        let (set, info) = parse_policies(&policy_files, &mut errors);
        let Some(schema) = schema else {
            return Err(LoadErrors(errors));
        };
        let names = match Names::check(&schema) {
            Ok(names) => Some(names),
            Err(message) => {
                errors.push(problem(&self.schema_dir, None, message));
                None
            }
        };
        let mut warnings = validate(&schema, &set, &info, &policy_files, &mut errors);
        warnings.extend(unmatchable_types(&policy_files));
        let Some(names) = names.filter(|_| errors.is_empty()) else {
            return Err(LoadErrors(errors));
        };
        let policies = Policies {
            generation: generation(&schema_files, &policy_files, &[]),
            schema,
            set,
            info,
            names,
            authorizer: Authorizer::new(),
        };
        if !policies.permits_anything() {
            warnings.push(problem(
                &self.policies_dir,
                None,
                "no policy permits anything: every request is denied",
            ));
        }
        Ok(Loaded { policies, warnings })
    }
}

impl PolicyPaths {
    /// The hash a load of the files as they are now would give as its
    /// generation, without parsing them: cheap enough to poll.
    /// Files that cannot be read change it too, so that a reload reports
    /// them instead of serving on without their rules.
    pub fn fingerprint(&self) -> String {
        let mut problems = Vec::new();
        let (schema, policies) = self.read(&mut problems);
        generation(&schema, &policies, &problems)
    }

    /// The policy files a load reads, in load order.
    pub fn policy_files(&self) -> Vec<PathBuf> {
        read_dir(&self.policies_dir, &POLICY_FILES, &mut Vec::new())
            .into_iter()
            .map(|source| source.path)
            .collect()
    }

    /// The schema files and the policy files, each in load order.
    fn read(&self, errors: &mut Vec<LoadError>) -> (Vec<Source>, Vec<Source>) {
        let schema = read_dir(&self.schema_dir, &SCHEMA_FILES, errors);
        let policies = read_dir(&self.policies_dir, &POLICY_FILES, errors);
        (schema, policies)
    }
}

fn problem(file: &Path, position: Option<(usize, usize)>, message: impl Into<String>) -> LoadError {
    LoadError {
        file: file.to_owned(),
        position,
        message: message.into(),
        help: None,
    }
}

/// The files in `dir` ending in one of `suffixes`, by name. Hidden entries
/// are skipped: Kubernetes mounts a ConfigMap's real files under `..data`.
fn read_dir(dir: &Path, suffixes: &[&str], errors: &mut Vec<LoadError>) -> Vec<Source> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            // A relative folder is relative to where the command runs, which
            // is the usual surprise: say where that is.
            let looked_in = match std::path::absolute(dir) {
                Ok(absolute) if dir.is_relative() => {
                    format!(" (looked in `{}`)", absolute.display())
                }
                _ => String::new(),
            };
            let message = format!(
                "cannot read folder{looked_in}: {e}; name it with --schema / --policies \
                 or MITHRIL_GATE_SCHEMA / MITHRIL_GATE_POLICIES"
            );
            errors.push(problem(dir, None, message));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            // Not `is_file`: a dangling symlink must be reported as a file
            // that cannot be read, not skipped with the rules it held.
            !name.starts_with('.') && suffixes.iter().any(|s| name.ends_with(s)) && !path.is_dir()
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        errors.push(problem(
            dir,
            None,
            format!("no `{}` files here", suffixes.join("` or `")),
        ));
    }
    paths
        .into_iter()
        .filter_map(|path| match std::fs::read_to_string(&path) {
            Ok(text) => Some(Source { path, text }),
            Err(e) => {
                errors.push(problem(&path, None, format!("cannot read file: {e}")));
                None
            }
        })
        .collect()
}

fn parse_schema(dir: &Path, files: &[Source], errors: &mut Vec<LoadError>) -> Option<Schema> {
    let before = errors.len();
    let mut fragments = Vec::new();
    for file in files {
        let parsed = if file.path.to_string_lossy().ends_with(".json") {
            SchemaFragment::from_json_str(&file.text).map_err(|e| diagnostics(&e, file))
        } else {
            SchemaFragment::from_cedarschema_str(&file.text)
                .map(|(fragment, _warnings)| fragment)
                .map_err(|e| diagnostics(&e, file))
        };
        match parsed {
            Ok(fragment) => fragments.push(fragment),
            Err(found) => errors.extend(found),
        }
    }
    if errors.len() > before || files.is_empty() {
        return None;
    }
    Schema::from_schema_fragments(fragments)
        .map_err(|e| {
            // Errors across fragments (a type used in one file and declared
            // nowhere) carry no single file.
            errors.extend(diagnostics(
                &e,
                &Source {
                    path: dir.to_owned(),
                    text: String::new(),
                },
            ))
        })
        .ok()
}

/// Parses every policy file; each policy takes its `@id` as its id.
fn parse_policies(
    files: &[Source],
    errors: &mut Vec<LoadError>,
) -> (PolicySet, HashMap<PolicyId, PolicyInfo>) {
    let mut set = PolicySet::new();
    let mut info = HashMap::new();
    let mut seen: HashMap<String, (PathBuf, Option<(usize, usize)>)> = HashMap::new();
    for file in files {
        let parsed = match PolicySet::from_str(&file.text) {
            Ok(parsed) => parsed,
            Err(e) => {
                errors.extend(diagnostics(&e, file));
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            errors.push(problem(
                &file.path,
                None,
                "policy templates are not supported",
            ));
        }
        let mut search_from = 0;
        for policy in in_source_order(&parsed) {
            let text = policy.to_string();
            let offset = file.text[search_from..]
                .find(&text)
                .map(|at| at + search_from);
            if let Some(offset) = offset {
                search_from = offset + text.len();
            }
            let position = offset.map(|o| line_column(&file.text, o));
            let Some(id) = policy.annotation("id").filter(|id| !id.trim().is_empty()) else {
                errors.push(problem(
                    &file.path,
                    position,
                    "policy has no `@id` annotation",
                ));
                continue;
            };
            if let Some((first_file, first_position)) = seen.get(id) {
                let at = match first_position {
                    Some((line, column)) => format!("{}:{line}:{column}", first_file.display()),
                    None => first_file.display().to_string(),
                };
                errors.push(problem(
                    &file.path,
                    position,
                    format!("`@id(\"{id}\")` is already used at {at}"),
                ));
                continue;
            }
            seen.insert(id.to_owned(), (file.path.clone(), position));
            let policy_id = PolicyId::new(id);
            info.insert(
                policy_id.clone(),
                PolicyInfo {
                    order: info.len(),
                    message: policy.annotation("message").map(str::to_owned),
                    file: file.path.clone(),
                    position,
                },
            );
            if let Err(e) = set.add(policy.new_id(policy_id)) {
                errors.push(problem(&file.path, position, e.to_string()));
            }
        }
    }
    (set, info)
}

/// A parsed file's policies are named `policy0`, `policy1`, ... in the
/// order they stand in the file.
fn in_source_order(parsed: &PolicySet) -> Vec<&cedar_policy::Policy> {
    let mut policies: Vec<_> = parsed.policies().collect();
    policies.sort_by_key(|p| {
        p.id()
            .to_string()
            .strip_prefix("policy")
            .and_then(|n| n.parse::<usize>().ok())
    });
    policies
}

fn validate(
    schema: &Schema,
    set: &PolicySet,
    info: &HashMap<PolicyId, PolicyInfo>,
    files: &[Source],
    errors: &mut Vec<LoadError>,
) -> Vec<LoadError> {
    let result = Validator::new(schema.clone()).validate(set, ValidationMode::Strict);
    let file_of = |id: &PolicyId| {
        info.get(id)
            .and_then(|i| files.iter().find(|f| f.path == i.file))
    };
    let place = |diagnostic: &dyn Diagnostic, id: &PolicyId| match file_of(id) {
        Some(file) => diagnostics(diagnostic, file),
        None => vec![problem(
            Path::new(AsRef::<str>::as_ref(id)),
            None,
            diagnostic.to_string(),
        )],
    };
    for error in result.validation_errors() {
        errors.extend(place(error, error.policy_id()));
    }
    let mut warnings = Vec::new();
    for warning in result.validation_warnings() {
        warnings.extend(place(warning, warning.policy_id()));
    }
    warnings
}

/// Client type names with lower-case letters: the gateway upper-cases
/// Mithril's names, so `Mithril::ClientType::"nhs"` can never match.
fn unmatchable_types(files: &[Source]) -> Vec<LoadError> {
    const TYPE: &str = "ClientType::\"";
    let mut warnings = Vec::new();
    for file in files {
        for (at, _) in file.text.match_indices(TYPE) {
            let name_start = at + TYPE.len();
            let Some(name) = file.text[name_start..].split('"').next() else {
                continue;
            };
            if name.bytes().any(|b| b.is_ascii_lowercase()) {
                let message = format!(
                    "`ClientType::\"{name}\"` can never match: client type names are \
                     upper-cased before the policies see them; write `\"{}\"`",
                    name.to_ascii_uppercase()
                );
                warnings.push(problem(
                    &file.path,
                    Some(line_column(&file.text, at)),
                    message,
                ));
            }
        }
    }
    warnings
}

/// Every error in a diagnostic and its related ones, placed in `file`.
fn diagnostics(diagnostic: &dyn Diagnostic, file: &Source) -> Vec<LoadError> {
    let mut found = Vec::new();
    collect(diagnostic, file, &mut found);
    found
}

fn collect(diagnostic: &dyn Diagnostic, file: &Source, found: &mut Vec<LoadError>) {
    let position = diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .filter(|_| !file.text.is_empty())
        .map(|label| line_column(&file.text, label.offset()));
    found.push(LoadError {
        file: file.path.clone(),
        position,
        message: diagnostic.to_string(),
        help: diagnostic.help().map(|help| help.to_string()),
    });
    if let Some(related) = diagnostic.related() {
        for inner in related {
            collect(inner, file, found);
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A short hash of every file's name and content: which rules are serving.
/// Files that could not be read (`unreadable`, empty for a load that
/// succeeded) count too, so that they change the hash.
fn generation(schema: &[Source], policies: &[Source], unreadable: &[LoadError]) -> String {
    let mut hasher = Sha256::new();
    let mut add = |part: &[u8]| {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    };
    for file in schema.iter().chain(policies) {
        let name = file
            .path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        add(name.as_bytes());
        add(file.text.as_bytes());
    }
    for problem in unreadable {
        add(problem.to_string().as_bytes());
    }
    let digest = hasher.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
