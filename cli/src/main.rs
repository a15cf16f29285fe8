//! The `casenote` binary: everything lives in the library so tests can run the same entry point.

fn main() -> std::process::ExitCode {
    casenote_cli::main()
}
