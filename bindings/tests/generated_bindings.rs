//! The bindings as an app sees them: generates the Kotlin, Swift and Python bindings from the
//! cdylib this very test run built, checks the Kotlin and Swift declare the device object and its
//! `sync`, and runs `tests/python/converge.py` through the Python bindings against a real server
//! (in this process, on 127.0.0.1:0, over a real sled store): two devices edit one case offline,
//! sync, and converge.
//!
//! The cdylib: cargo builds every crate type of the library for an integration test (`lib` and
//! `cdylib` in one rustc call), into the `deps` directory beside this test's executable, and
//! copies it one level up. The test looks in exactly those two places, so it never runs a nested
//! `cargo build` (which would wait forever on the build-directory lock this `cargo test` holds).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BINDGEN: &str = env!("CARGO_BIN_EXE_uniffi-bindgen");

/// The cdylib cargo built for this test run.
fn cdylib() -> PathBuf {
    let name = format!(
        "{}casenote_ffi{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let exe = std::env::current_exe().expect("the test's own path");
    let deps = exe.parent().expect("the test executable's directory");
    let candidates = [deps.join(&name), deps.parent().unwrap_or(deps).join(&name)];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no {name} in {candidates:?}: cargo should build the cdylib for this test \
                 (crate-type = [\"lib\", \"cdylib\"] in bindings/Cargo.toml)"
            )
        })
}

/// Runs `uniffi-bindgen generate` for `language` into `out`.
fn generate(lib: &Path, language: &str, out: &Path) {
    let output = Command::new(BINDGEN)
        .args(["generate", "--library"])
        .arg(lib)
        .args(["--language", language, "--no-format", "--out-dir"])
        .arg(out)
        .output()
        .expect("run uniffi-bindgen");
    assert!(
        output.status.success(),
        "uniffi-bindgen generate --language {language} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the generated {} is missing: {e}", path.display()))
}

/// A casenote server in this process: one org, one team, two members of staff, a token each.
struct TestServer {
    url: String,
    tokens: [String; 2],
    runtime: tokio::runtime::Runtime,
}

impl TestServer {
    fn start(data: &Path) -> TestServer {
        use casenote_server::admin::{self, NewStaff};
        use casenote_server::model::{By, Role};
        let store = casenote_server::open(data).expect("open the server's sled store");
        let s: &dyn casenote_server::Store = store.as_ref();
        let (org, team) = ("Test Council", "Locality Team North");
        let now = casenote_server::now_ms();
        admin::add_org(s, By::Cli, org, now).unwrap();
        admin::add_team(s, By::Cli, org, team, now).unwrap();
        let tokens = ["Ada Able", "Ben Baker"].map(|name| {
            let new = NewStaff {
                name,
                role: Role::SocialWorker,
                org,
                teams: &[team.to_string()],
            };
            let staff = admin::add_staff(s, By::Cli, new, now).unwrap();
            admin::issue_token(s, By::Cli, staff.staff_id, "phone", now)
                .unwrap()
                .token
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(casenote_server::run(
            listener,
            Arc::clone(&store) as Arc<dyn casenote_server::Store>,
            casenote_server::Config::default(),
            std::future::pending(),
        ));
        TestServer {
            url,
            tokens,
            runtime,
        }
    }
}

#[test]
fn generated_bindings_declare_the_device_and_python_devices_converge_through_a_real_server() {
    let started = Instant::now();
    let lib = cdylib();
    let tmp = tempfile::tempdir().unwrap();

    // Kotlin and Swift: generated, and declaring the device object and its sync.
    let kotlin_dir = tmp.path().join("kotlin");
    generate(&lib, "kotlin", &kotlin_dir);
    let kotlin = read(&kotlin_dir.join("uniffi/casenote_ffi/casenote_ffi.kt"));
    for want in [
        "open class CasenoteDevice",
        "fun `sync`(): SyncReport",
        "fun `status`(): DeviceStatus",
        "sealed class CasenoteException",
    ] {
        assert!(kotlin.contains(want), "the Kotlin bindings lack {want:?}");
    }
    // An error field named `message` clashes with `Throwable.message` and does not compile in
    // Kotlin (mozilla/uniffi-rs#1434); the error is flat so that this cannot happen.
    assert!(
        !kotlin.contains("val `message`"),
        "the Kotlin bindings declare a `message` field, which does not compile"
    );
    let swift_dir = tmp.path().join("swift");
    generate(&lib, "swift", &swift_dir);
    let swift = read(&swift_dir.join("casenote_ffi.swift"));
    for want in [
        "open class CasenoteDevice",
        "func sync() throws  -> SyncReport",
        "enum CasenoteError: Swift.Error",
    ] {
        assert!(swift.contains(want), "the Swift bindings lack {want:?}");
    }
    assert!(swift_dir.join("casenote_ffiFFI.h").is_file());
    assert!(swift_dir.join("casenote_ffiFFI.modulemap").is_file());

    // Python: the module loads the library from its own directory.
    let py_dir = tmp.path().join("python");
    generate(&lib, "python", &py_dir);
    std::fs::copy(&lib, py_dir.join(lib.file_name().unwrap())).unwrap();

    let server = TestServer::start(&tmp.path().join("server"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/converge.py");
    let output = Command::new("python3")
        .arg(&script)
        .env("PYTHONPATH", &py_dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("CASENOTE_URL", &server.url)
        .env("CASENOTE_TOKEN_A", &server.tokens[0])
        .env("CASENOTE_TOKEN_B", &server.tokens[1])
        .env("CASENOTE_WORK", tmp.path().join("devices"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 ({e}): the Python bindings test needs python3 on PATH \
                 (.ci/run installs it with apt-get)"
            )
        });
    let shown = format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "converge.py failed ({}):\n{shown}",
        output.status
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("converged"),
        "converge.py exited 0 without saying it converged:\n{shown}"
    );
    server.runtime.shutdown_timeout(Duration::from_secs(2));
    eprintln!(
        "{}bindings generated and Python devices converged in {:.1}s",
        String::from_utf8_lossy(&output.stdout),
        started.elapsed().as_secs_f64()
    );
}
