//! The `pyrogate` binary: parse the command line, run it, map the result to an exit code.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
