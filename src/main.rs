//! The `pyrogate` binary: parse the command line, run it, map the result to an exit code.

mod cli;

// mimalloc: the request path allocates and frees many small buffers per push (headers,
// futures, body chunks) across threads; glibc's malloc spent ~18 % of the node's user time on
// them (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // No transparent huge pages: mimalloc asks for them on its arenas, and the kernel then backs
    // every touched 2 MiB at once, so each idle connection's mostly-empty 8 KiB hyper buffers
    // counted whole (~21 KiB resident per held long-poll instead of ~13 KiB, and ~7 MiB more at
    // rest; docs/benchmarks.md). A gateway's heap is small: the TLB saving is not worth it.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    // jsonwebtoken's crypto is ours (ring), installed before anything signs or verifies.
    if let Err(err) = pyrogate::core::crypto::install() {
        eprintln!("error: {err}");
        return std::process::ExitCode::FAILURE;
    }
    cli::main()
}
