//! The `casenote-server` binary; everything it does is in [`casenote_server::cli`].

fn main() -> std::process::ExitCode {
    casenote_server::cli::main()
}
