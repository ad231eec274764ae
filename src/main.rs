//! The `pyrogate` binary: parse the command line, run it, map the result to an exit code.

mod cli;

fn main() -> std::process::ExitCode {
    // jsonwebtoken's crypto is ours (ring), installed before anything signs or verifies.
    if let Err(err) = pyrogate::core::crypto::install() {
        eprintln!("error: {err}");
        return std::process::ExitCode::FAILURE;
    }
    cli::main()
}
