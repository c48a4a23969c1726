//! Command-line interface.

mod auth;
mod certs;
mod demo;
mod enroll;
mod run;
mod view;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The version and the commit the binary was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("MEDIAMESH_COMMIT"), ")");

/// mediamesh: carries live camera video from edge sites to the cloud.
#[derive(Debug, Parser)]
#[command(name = "mediamesh", version = VERSION, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines (stderr) are written: `text`, or `json` (one object per line).
    #[arg(long, global = true, env = "MEDIAMESH_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: crate::logging::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub (cloud side): accepts edge tunnels, serves viewers and the REST API.
    Hub {
        /// YAML file with a `cloudDataStream` block.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the edge agent (site side): dials the hub, streams cameras on demand.
    Edge {
        /// YAML file with an `edgeDataStream` block.
        #[arg(long, short)]
        config: PathBuf,
        /// Enroll first: the hub's tunnel address (`hub.example.com:10006`) to join with
        /// `--token`; the key and certificates go where `tlsTunnel*` say.
        #[arg(long, requires = "token")]
        join: Option<String>,
        /// A join token from `mediamesh token create` (used once).
        #[arg(long, env = "MEDIAMESH_JOIN_TOKEN", hide_env_values = true, requires = "join")]
        token: Option<mediamesh_auth::Secret>,
    },
    /// Check a configuration file (either block, or both) and the files it names, starting
    /// nothing; exit status 0 if it can be used (as `nginx -t`).
    Check {
        /// The YAML file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a hub and an edge with two test-pattern cameras in this process, TLS on.
    Demo(demo::DemoArgs),
    /// Watch a stream over WebSocket: print what arrives, optionally save it as raw H.264.
    View(view::ViewArgs),
    /// Create a development CA, a hub certificate and edge certificates.
    Certs(certs::CertsArgs),
    /// Make what the `auth` block needs: password hashes, a token signing key, tokens.
    Auth(auth::AuthArgs),
    /// Join tokens for enrolling edges (`mediamesh token create --node edge-7`).
    Token(enroll::TokenArgs),
    /// Revoke a node (`mediamesh node revoke edge-7`).
    Node(enroll::NodeArgs),
}

impl Command {
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::View(_)
            | Command::Certs(_)
            | Command::Auth(_)
            | Command::Token(_)
            | Command::Node(_)
            | Command::Check { .. } => "warn",
            _ => "info",
        }
    }

    /// Whether it runs until stopped (hub, edge, demo): its whole stderr becomes the log.
    pub fn is_service(&self) -> bool {
        matches!(self, Command::Hub { .. } | Command::Edge { .. } | Command::Demo(_))
    }

    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Hub { config } => run::hub(&config).await,
            Command::Edge { config, join, token } => {
                if let (Some(hub), Some(token)) = (join, token) {
                    enroll::join(&config, &hub, token.expose()).await?;
                }
                run::edge(&config).await
            }
            Command::Check { config } => run::check(&config),
            Command::Demo(args) => demo::run(args).await,
            Command::View(args) => view::run(args).await,
            Command::Certs(args) => certs::run(args),
            Command::Auth(args) => auth::run(args),
            Command::Token(args) => enroll::token(args),
            Command::Node(args) => enroll::node(args),
        }
    }
}

/// An error already shown to the user: `main` exits with a failure status and prints nothing
/// more.
#[derive(Debug, thiserror::Error)]
#[error("reported")]
pub struct Reported;

/// An error and its causes on one line, each cause added only if the text before does not
/// already say it (our errors often carry their cause's text in their own message).
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

pub use mediamesh_config::state_dir;

/// What a signal asks of a running hub, edge or demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT (Ctrl-C): stop cleanly.
    Stop,
    /// SIGHUP: reload the configuration.
    Reload,
}

/// The signals a service listens to.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (from then on SIGHUP no longer kills the process).
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM), for commands that do not
/// reload (`view`).
pub async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
