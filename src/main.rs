//! `mediamesh`: edge-to-cloud live camera relay.
//!
//! Subcommands: `hub` (the cloud side), `edge` (the site agent), `demo` (both, with test
//! cameras, in one process), `view` (a WebSocket viewer), `certs` (development PKI).
//! Logging setup lives here; configuration loading in `mediamesh-config`, everything else in
//! the other crates.

#![forbid(unsafe_code)]

mod cli;
mod logging;
mod notify;

use std::io::Write;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.command.default_log_level(), cli.log_format, cli.command.is_service());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(logging::console(), "error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.command.run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<cli::Reported>() => std::process::ExitCode::FAILURE,
        Err(e) => {
            let _ = writeln!(logging::console(), "error: {}", cli::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
