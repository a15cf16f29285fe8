//! The `casenote-server` binary; everything it does is in [`casenote_server::cli`].

/// jemalloc gives memory back that glibc's malloc keeps after big pushes (see the server's
/// Cargo.toml), so the server stays within its memory bound.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    casenote_server::cli::main()
}
