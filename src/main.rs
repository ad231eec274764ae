//! The `pyrogate` binary: parse the command line, run it, map the result to an exit code.

fn main() -> std::process::ExitCode {
    pyrogate::cli::main()
}
