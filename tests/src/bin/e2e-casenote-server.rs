//! The `casenote-server` binary, built inside this package so end-to-end tests can spawn it.

fn main() -> std::process::ExitCode {
    casenote_server::cli::main()
}
