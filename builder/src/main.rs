//! The `jeos` command: parses the command line, runs it, renders errors, exits.
#![cfg_attr(
    test,
    allow(
        clippy::too_many_lines,
        reason = "test functions are scripts of steps; the 150-line limit is for the code they test"
    )
)]

use std::process::ExitCode;

use builder::cli::{self, Cli, ExitStatus, Session};
use clap::Parser;

fn main() -> ExitCode {
    // An interrupted build removes its hidden work directory before the process ends, so
    // nothing partial is left in the output directory.
    // `jeos run --vmm embedded`: the first signal presses the VM's ACPI power button
    // instead (a clean guest shutdown; the run then ends by itself).
    let _ = ctrlc::set_handler(|| {
        if cli::press_power_button() {
            return;
        }
        builder::pipeline::remove_active_work_dirs();
        #[allow(
            clippy::exit,
            reason = "the conventional exit status of an interrupted command"
        )]
        std::process::exit(130);
    });
    let args = Cli::parse();
    let verbose = args.global.verbose;
    let mut session = Session::from_env(args.global);
    let result = cli::run(args.command, &mut session);
    while builder::pipeline::interrupted() {
        // The signal handler is removing the build's work directory and ends the process
        // with 130; an error from the build losing that directory is not this run's end.
        std::thread::park();
    }
    let status = match result {
        Ok(status) => status,
        Err(report) => {
            if session.global.json {
                // The stream of events ends with the error, so a program reading stdout
                // never has to guess why it stopped.
                let error = cli::error_json(report.as_ref());
                session.printer.stdout_line(&error.to_string());
            }
            let text = session.printer.render_diagnostic(report.as_ref());
            session.printer.stderr_line(text.trim_end());
            if builder::no_space::in_chain(report.as_ref()) {
                session.printer.hint(builder::no_space::HINT);
            }
            if verbose {
                // The graphical handler already lists causes; --verbose adds the Debug
                // chain, which includes the error types.
                session
                    .printer
                    .stderr_line(&format!("debug: {:?}", report.root_cause()));
            }
            ExitStatus::Error
        }
    };
    ExitCode::from(status.code())
}
