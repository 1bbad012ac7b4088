//! Reloading the schema and policies while serving.
//!
//! Three things start a reload: a file event in either folder, a periodic
//! comparison of the files' content hash with the serving generation (file
//! events do not arrive everywhere: Kubernetes swaps a ConfigMap's files by
//! renaming a symlink, network file systems send none), and SIGHUP. A
//! reload waits until the files hold still (a file being written changes
//! between two reads), then parses and strictly validates them whole; only
//! a complete, valid generation is swapped in. One that fails, or one that
//! would permit nothing (a truncated file, most likely), leaves the serving
//! generation in place, logs its problems once, and is counted in the
//! [`PolicyStore`] for readiness and metrics.
//!
//! What this cannot tell: a file written in two pauses whose first part is
//! valid Cedar on its own. Write policy files whole (a new file renamed
//! over the old one), as editors and Kubernetes do.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{LoadError, LoadErrors, PolicyPaths, PolicyStore, REPORTED_PROBLEMS};

/// How long file events are let settle before reading, and how long the
/// files must then hold still: an editor's save or a `cp` is several
/// events, and a file being written changes between two reads.
const SETTLE: Duration = Duration::from_millis(100);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files hold the serving generation.
    Unchanged,
    /// The files hold content already refused; not reloaded again.
    StillRefused,
    /// The files changed while being read; the next event or poll retries.
    Unsettled,
    /// A new generation serves.
    Swapped,
    /// The files do not load; the serving generation stays.
    Refused,
}

/// Compares the files with what serves and reloads them when they differ.
#[derive(Debug)]
pub struct Reloader {
    paths: PolicyPaths,
    store: Arc<PolicyStore>,
    /// The content hash of the last refused files, so that a broken
    /// change is reported once, not at every poll.
    refused: Option<String>,
}

impl Reloader {
    pub fn new(paths: PolicyPaths, store: Arc<PolicyStore>) -> Self {
        Self {
            paths,
            store,
            refused: None,
        }
    }

    /// Reloads when the files changed; `forced` (SIGHUP) also retries
    /// files that were refused.
    pub async fn reload(&mut self, forced: bool) -> Reload {
        let fingerprint = self.paths.fingerprint();
        let serving = self.store.current();
        if fingerprint == serving.generation() {
            if self.refused.take().is_some() {
                self.store.mended();
                tracing::info!(
                    serving = serving.generation(),
                    "policy files are back to the serving generation"
                );
            }
            return Reload::Unchanged;
        }
        if !forced && self.refused.as_deref() == Some(fingerprint.as_str()) {
            return Reload::StillRefused;
        }
        tokio::time::sleep(SETTLE).await;
        if self.paths.fingerprint() != fingerprint {
            return Reload::Unsettled;
        }
        let loaded = self.paths.load().and_then(|loaded| {
            if loaded.policies.permits_anything() {
                Ok(loaded)
            } else {
                Err(LoadErrors(vec![LoadError {
                    file: self.paths.policies_dir.clone(),
                    position: None,
                    message: "the new policies permit nothing, so every request would be \
                              denied; refused while serving (a restart serves such rules)"
                        .into(),
                    help: None,
                }]))
            }
        });
        match loaded {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    tracing::warn!(%warning, "policy warning");
                }
                let to = loaded.policies.generation().to_owned();
                let from = self.store.replace(loaded.policies);
                self.refused = None;
                tracing::info!(from = from.generation(), %to, "policies reloaded");
                Reload::Swapped
            }
            Err(errors) => {
                for error in errors.0.iter().take(REPORTED_PROBLEMS) {
                    tracing::error!(%error, "policy reload refused");
                }
                tracing::error!(
                    serving = serving.generation(),
                    problems = errors.0.len(),
                    "policy reload refused; the serving policies stay"
                );
                self.store.refuse(errors);
                self.refused = Some(fingerprint);
                Reload::Refused
            }
        }
    }
}

/// Reloads on file events, every `interval` when the content changed, and
/// on SIGHUP, until `stopping` turns true.
pub async fn watch(
    mut reloader: Reloader,
    interval: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let (events, mut changed) = mpsc::channel::<()>(1);
    // Kept alive for as long as the loop runs; dropping it stops events.
    let _watcher = file_events(&reloader.paths, events);
    let mut hangup = hangup();
    let mut poll = tokio::time::interval(interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = poll.tick() => {
                reloader.reload(false).await;
            }
            Some(()) = changed.recv() => {
                tokio::time::sleep(SETTLE).await;
                while changed.try_recv().is_ok() {}
                reloader.reload(false).await;
            }
            Some(()) = next_hangup(&mut hangup) => {
                tracing::info!("SIGHUP: reloading policies");
                if reloader.reload(true).await == Reload::Unchanged {
                    tracing::info!("policies unchanged");
                }
            }
            _ = stopping.changed() => break,
        }
    }
}

/// A watcher sending one message per burst of changes in either folder;
/// `None` (polling alone) where the platform cannot watch.
fn file_events(
    paths: &PolicyPaths,
    events: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // Full means a reload is already due.
            let _ = events.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the policy folders; polling only");
            return None;
        }
    };
    for dir in [&paths.schema_dir, &paths.policies_dir] {
        if let Err(error) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(%error, dir = %dir.display(), "cannot watch folder; polling only");
        }
    }
    Some(watcher)
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP"))
        .ok()
}

#[cfg(not(unix))]
fn hangup() -> Hangup {
    None
}

/// The next SIGHUP; never, where there is none to wait for.
async fn next_hangup(hangup: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        return signal.recv().await;
    }
    let _ = hangup;
    std::future::pending().await
}
