//! The `pyrogate` binary: parse the command line, run it, map the result to an exit code.

mod cli;

// mimalloc: the request path allocates and frees many small buffers per push (headers,
// futures, body chunks) across threads; glibc's malloc spent ~18 % of the node's user time on
// them (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // jsonwebtoken's crypto is ours (ring), installed before anything signs or verifies.
    if let Err(err) = pyrogate::core::crypto::install() {
        eprintln!("error: {err}");
        return std::process::ExitCode::FAILURE;
    }
    cli::main()
}
