//! `kubectl-ste`: parses the command line and hands it to the library.
//! Exit status 0 on success and for --help/--version; 1 on every error,
//! usage errors included (clap's own code would be 2).

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use kubectl_ste::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            };
        }
    };
    ste_main::block_on(ste_main::Workers::Fixed(2), kubectl_ste::run(cli))
}
