//! casenote-tests: end-to-end tests that run real servers and real clients.
//!
//! The binaries in `src/bin` are the real `casenote-server` and `casenote` entry points under
//! test-only names, so the integration tests in `tests/` can start them as child processes
//! (`CARGO_BIN_EXE_*`), kill them with SIGKILL, and restart them on the same data.
