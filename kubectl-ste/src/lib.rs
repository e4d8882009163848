//! `kubectl ste`: the kubectl plugin of STE (Sharded Transient Etcd).
//!
//! * `status` — one row per ring member, from the router and its agents.
//! * `where pod/NAME` — which member stores a pod (STE ring, or the
//!   original prototype's placements).
//! * `ring show | join NODE | leave NODE` — the ring and changes to it.
//! * `version` — plugin, router and agent versions.
//!
//! Conventions follow kubectl: `--kubeconfig`/`KUBECONFIG`, `--context`,
//! `-n`, `-A`, `-o table|wide|json|yaml`, `--no-headers`,
//! `--request-timeout`; data on stdout, diagnostics on stderr; exit 1 on
//! any error. `main.rs` only parses flags; [`run`] does the rest.

pub mod cli;
pub mod cmd;
pub mod complete;
pub mod connect;
pub mod credentials;
pub mod error;
pub mod kube_api;
pub mod kubeconfig;
pub mod output;
pub mod resource;
pub mod session;
pub mod trust;

use cli::{Cli, Command, RingCommand};
use error::CliResult;
use output::Term;
use session::Session;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> CliResult<()> {
    let term = Term::stdio(cli.global.color);
    let mut session = Session::new(&cli.global, term)?;
    match &cli.command {
        Command::Status => cmd::status::run(&mut session).await,
        Command::Where(args) => cmd::locate::run(&mut session, args).await,
        Command::Ring(RingCommand::Show) => cmd::ring_show::run(&mut session).await,
        Command::Ring(RingCommand::Join(args)) => cmd::ring_change::join(&mut session, args).await,
        Command::Ring(RingCommand::Leave(args)) => {
            cmd::ring_change::leave(&mut session, args).await
        }
        Command::Version(args) => cmd::version::run(&mut session, args).await,
    }
}
