//! The `rempart` command: check a configuration, or run the proxy with it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc: glibc's malloc and free took about 12% of the proxy's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rempart::config;
use rempart::launch::{self, Mode};

/// Rempart: a resilient edge reverse proxy for school digital workspaces.
#[derive(Parser, Debug)]
#[command(name = "rempart", version, about)]
struct Cli {
    /// The configuration file.
    #[arg(short = 'c', long = "conf", value_name = "FILE")]
    conf: PathBuf,
    /// Check the configuration fully and exit.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// Take over the listening sockets of a running instance.
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();

    let config = match config::load(&cli.conf) {
        Ok(config) => config,
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("{error}");
            }
            return ExitCode::from(1);
        }
    };
    if cli.test {
        for warning in &config.warnings {
            eprintln!("warning: {warning}");
        }
        // What the schedules do from now (by the clock a start would read).
        let outlook = match (&config.schedules, rempart::schedule::clock::from_env()) {
            (Some(schedules), Ok(clock)) => {
                Some(rempart::schedule::describe(schedules, clock.now()))
            }
            (None, _) => None,
            (Some(_), Err(e)) => {
                eprintln!("rempart: {e}");
                return ExitCode::from(1);
            }
        };
        println!("configuration {} is valid", cli.conf.display());
        if let Some(line) = outlook {
            println!("{line}");
        }
        return ExitCode::SUCCESS;
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let mode = Mode {
        daemon: cli.daemon,
        upgrade: cli.upgrade,
    };
    match launch::run(config, mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rempart: {e}");
            ExitCode::from(1)
        }
    }
}

/// Logs (not the access log) go to stderr; `RUST_LOG` filters them, `info` by default.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
