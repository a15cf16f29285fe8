//! The `casenote-server` binary, built inside this package so end-to-end tests can spawn it.

/// The same allocator as the real binary (see the server's Cargo.toml).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    casenote_server::cli::main()
}
