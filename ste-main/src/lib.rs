//! What every STE binary's `main()` does after parsing its flags: set up
//! logging, start the tokio runtime, run the library's entry point on it,
//! and turn the outcome into the exit status.
//!
//! The daemons (`ste-agent`, `ste-router`) and the kubectl plugin used to
//! carry a copy each; they differed only in the number of worker threads
//! and in how an error is worded, which are the parameters here.
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! async fn serve() -> anyhow::Result<()> {
//!     Ok(())
//! }
//!
//! fn main() -> ExitCode {
//!     # #[cfg(feature = "logging")]
//!     ste_main::init_logging("info");
//!     ste_main::block_on(ste_main::Workers::Fixed(2), serve())
//! }
//! ```
//!
//! Exit status: 0 when the future returns `Ok(())`; 1 when it returns an
//! error (printed on stderr as [`Report::report`] words it) or when the
//! runtime cannot start.

#![warn(missing_docs)]

use std::future::Future;
use std::process::ExitCode;

/// How many worker threads the runtime gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One per CPU core (tokio's default): for a server whose throughput
    /// should grow with the machine, like the router.
    Cores,
    /// A fixed number (at least 1): for a process that must stay small next
    /// to the workload it serves, like the agent on every node, or a CLI.
    Fixed(usize),
}

/// How a failed run is worded on stderr: the complete text, prefix
/// included, without a trailing newline.
pub trait Report {
    /// The lines to print.
    fn report(&self) -> String;
}

/// `error: ` and the whole chain of causes on one line, outermost first
/// (`error: cannot mount /var/lib/ste: EPERM`), as the daemons print it.
impl Report for anyhow::Error {
    fn report(&self) -> String {
        format!("error: {self:#}")
    }
}

/// Runs `future` to completion on a new multi-threaded tokio runtime (I/O
/// and timers enabled) and maps its outcome to the process exit status.
/// The runtime is dropped before returning, so tasks still running are
/// cancelled at their next `.await`.
pub fn block_on<E: Report>(
    workers: Workers,
    future: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    let runtime = match build_runtime(workers) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    exit_code(runtime.block_on(future))
}

fn build_runtime(workers: Workers) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Workers::Fixed(n) = workers {
        builder.worker_threads(n.max(1));
    }
    builder.enable_all().build()
}

/// 0 for `Ok`; for `Err` the report on stderr and 1.
pub fn exit_code<E: Report>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", err.report());
            ExitCode::FAILURE
        }
    }
}

/// Logs `tracing` events to stderr, filtered by `filter` (`EnvFilter`
/// syntax, e.g. `info` or `ste_agent=debug,etcd=warn`); an invalid filter
/// falls back to `info` rather than failing start-up over a log setting.
/// Colour only when stderr is a terminal, so log files and `kubectl logs`
/// stay free of escape codes. Call once, before anything logs.
#[cfg(feature = "logging")]
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Words(&'static str);

    impl Report for Words {
        fn report(&self) -> String {
            self.0.to_owned()
        }
    }

    #[test]
    fn anyhow_errors_print_their_whole_chain() {
        let err = anyhow::anyhow!("EPERM").context("cannot mount /var/lib/ste");
        assert_eq!(err.report(), "error: cannot mount /var/lib/ste: EPERM");
    }

    #[test]
    fn the_outcome_is_the_exit_status() {
        assert_eq!(
            block_on(Workers::Fixed(1), async { Ok::<(), Words>(()) }),
            ExitCode::SUCCESS
        );
        assert_eq!(
            block_on(Workers::Cores, async { Err(Words("error: boom")) }),
            ExitCode::FAILURE
        );
    }

    #[test]
    fn the_future_runs_on_the_configured_workers() {
        let code = block_on(Workers::Fixed(2), async {
            let metrics = tokio::runtime::Handle::current().metrics();
            if metrics.num_workers() == 2 {
                Ok(())
            } else {
                Err(Words("wrong worker count"))
            }
        });
        assert_eq!(code, ExitCode::SUCCESS);
    }
}
