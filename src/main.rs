//! The `regiondb` binary. See DESIGN.md's "Processes and command line":
//!
//! - `regiondb`: a whole single-node cluster (scheduler, store, SQL gateway) in one process;
//! - `regiondb scheduler …`: the scheduler (timestamps, IDs) as its own process;
//! - `regiondb node …`: a store and SQL gateway of a multi-node cluster.

mod byte_size;
mod config;
mod data_dir;
mod duration_arg;
mod node;
mod scheduler_process;
mod single_node;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use config::{Cli, Command, NodeConfig, SchedulerConfig, SingleNodeConfig};

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))
    };
    let result = match &cli.command {
        None => SingleNodeConfig::resolve(&cli.single)
            .and_then(|config| runtime()?.block_on(single_node::run(config, shutdown_signal()))),
        Some(Command::Scheduler(args)) => SchedulerConfig::resolve(args).and_then(|config| {
            runtime()?.block_on(scheduler_process::run(config, shutdown_signal()))
        }),
        Some(Command::Node(args)) => NodeConfig::resolve(args)
            .and_then(|config| runtime()?.block_on(node::run(config, shutdown_signal()))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("regiondb: {message}");
            ExitCode::FAILURE
        }
    }
}
