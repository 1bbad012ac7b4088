//! The `mithril-gate` command: parse, set up logging, hand over.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use mithril_gate::app::App;
use mithril_gate::author;
use mithril_gate::clock::Clock;
use mithril_gate::config::{
    self, Cli, CliError, Command, ConfigError, DbCommand, EXIT_USAGE, LogFormat, ServeArgs,
    TokenSource,
};
use mithril_gate::db::{Database, demo};
use mithril_gate::server::{self, Listeners};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::load() {
        Ok(cli) => cli,
        Err(CliError::Clap(error)) => {
            let _ = error.print();
            return exit(if error.use_stderr() { EXIT_USAGE } else { 0 });
        }
        Err(error) => {
            eprintln!("error: {error}");
            return exit(EXIT_USAGE);
        }
    };
    let filter = match log_filter(&cli.log) {
        Ok(filter) => filter,
        Err(error) => {
            let error = cli.origins.place(ConfigError::new("log", error));
            eprintln!("error: {error}");
            return exit(EXIT_USAGE);
        }
    };
    init_logging(filter, cli.log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return exit(1);
        }
    };
    exit(runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Check(args) => print(author::check(&args)),
            Command::Test(args) => print(author::test(&args).await),
            Command::Authorize(args) => print(author::authorize(&args).await),
            Command::Config(args) => print_config(&cli.log, cli.log_format, &args),
            Command::Db {
                command: DbCommand::Init { database_url },
            } => db_init(&database_url).await,
        }
    }))
}

/// Log lines go to stderr: for a person, colored when stderr is a
/// terminal; for a collector, one JSON object a line with the event's
/// fields at the top level.
fn init_logging(filter: EnvFilter, format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// The `--log` filter. An empty one, or one naming the crate with `-`,
/// would silently log nothing at all: the audit trail lost unnoticed.
fn log_filter(log: &str) -> Result<EnvFilter, String> {
    if log.trim().is_empty() {
        return Err("is empty, which logs nothing; write `info`, `warn`, ...".into());
    }
    if log.contains("mithril-gate") {
        return Err("names `mithril-gate`; log targets are written `mithril_gate`".into());
    }
    EnvFilter::try_new(log).map_err(|error| error.to_string())
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn serve(args: ServeArgs) -> i32 {
    let config = match args.config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    let started = async {
        let app = App::build(&config, Clock::system()).await?;
        let listeners = Listeners::bind(config.listen, config.admin_listen).await?;
        Ok::<_, mithril_gate::app::StartError>((app, listeners))
    };
    let (app, listeners) = match started.await {
        Ok(started) => started,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit_code();
        }
    };
    let (Ok(public), Ok(admin)) = (listeners.public_addr(), listeners.admin_addr()) else {
        eprintln!("error: cannot read the listening addresses");
        return 1;
    };
    let database = app.db.as_ref().map(Database::backend);
    let sidecar = app.upstream.is_some();
    tracing::info!(%public, %admin, database, sidecar, demo = app.demo, "listening");
    // The demo's tokens only work where tokens are checked in its database.
    if app.demo && matches!(config.token_source, TokenSource::Database) {
        // A closed stdout (`serve | head`) must not stop the server.
        let _ = writeln!(std::io::stdout(), "{}", demo::banner(public));
    }
    server::run(listeners, app, server::shutdown_signal(), config.limits).await;
    0
}

/// Prints a policy author's command's output; a closed stdout is not an
/// error worth more than the exit code.
fn print(done: author::Done) -> i32 {
    let _ = std::io::stdout().write_all(done.output.as_bytes());
    done.code
}

/// Prints the configuration `serve` would run with, or refuses it as
/// `serve` would.
fn print_config(log: &str, log_format: LogFormat, args: &ServeArgs) -> i32 {
    if let Err(error) = args.config() {
        eprintln!("error: {error}");
        return EXIT_USAGE;
    }
    match config::effective(log, log_format, args) {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            0
        }
        Err(error) => {
            eprintln!("error: cannot print the configuration: {error}");
            1
        }
    }
}

async fn db_init(url: &mithril_gate::secret::Secret) -> i32 {
    match Database::init_postgres(url, Clock::system().now_secs()).await {
        Ok(()) => {
            let _ = write!(
                std::io::stdout(),
                "Created Mithril's tables and the demo data.\n{}",
                demo::tokens_table()
            );
            0
        }
        Err(error) => {
            eprintln!("error: {error}");
            1
        }
    }
}
