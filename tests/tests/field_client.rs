//! The field client as a new user meets it (issue 17), through the real `casenote` binary and a
//! real server: a watcher and other commands share a store; a store is found however its path is
//! written or wherever it moves; only `login` creates one; `show` is a page to read before a
//! visit; one spelling of every field; messages that say what happened and what to do, once; the
//! token kept out of the process list; progress on a terminal only; and the small things.

mod common;
use casenote_protocol::record;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Stdout and stderr of `out`, as text.
fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `casenote` binary with a fixed config directory (where default key files live) and
/// working directory, so that a test can spell the store's path as it likes.
fn casenote_in(config: &Path, cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(CLI_BIN);
    cmd.env("XDG_CONFIG_HOME", config)
        .env_remove("CASENOTE_KEY_FILE")
        .env_remove("CASENOTE_PASSPHRASE")
        .env_remove("CASENOTE_TOKEN")
        .env_remove("CASENOTE_STORE")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .args(args);
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run casenote")
}

/// Every file under `dir` (none if it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// A watcher's stdout, line by line, on a channel.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

// 1. A watcher and the other commands share a store.

#[test]
fn commands_work_beside_a_running_watcher_and_their_edits_go_up_without_a_sync() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let mark = device(&tmp, &server, &staff, "mark", "Mark Ellison");
    priya.sync();

    let mut watcher = priya
        .command(&["sync", "--watch", "--for", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut watcher);
    let first = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("the watcher syncs at once");
    assert!(first.contains("\"ok\":true"), "{first}");

    // The field worker works beside the watcher: every command works.
    let case = priya.ok(&["case", "new", "--name", "Beside Watcher"]);
    let note = priya.ok(&["note", "add", &case, "--kind", "visit", "--text", "Seen."]);
    priya.ok(&["note", "file", &note]);
    assert!(priya.ok(&["case", "list"]).contains("Beside Watcher"));
    assert_eq!(priya.show(&case)["notes"].as_array().unwrap().len(), 1);
    priya.ok(&["status"]);

    // And the edits go up without a sync by hand: the watcher notices them.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        mark.sync();
        if mark.ok(&["case", "list"]).contains("Beside Watcher") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher never sent the edits made beside it"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = watcher.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", texts(&out).1);
}

#[test]
fn a_store_held_past_the_wait_is_reported_busy_once_with_what_to_do() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let held = priya.open_store();
    let (code, err) = priya.fails(&["--wait", "1s", "case", "list"]);
    assert_eq!(code, 6, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one message: {err}");
    assert!(err.contains("busy") && err.contains("try again"), "{err}");
    assert!(!err.contains("IO error") && !err.contains("Os {"), "{err}");
    drop(held);
    priya.ok(&["case", "list"]);
}

// 2. A store is the same store however its path is written and wherever it is moved.

#[test]
fn a_store_is_the_same_store_however_its_path_is_written_or_wherever_it_is_moved() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let config = tmp.path().join("config");
    let token = token_of(&staff, "Priya Shah");
    let root = tmp.path();
    let out = run(casenote_in(
        &config,
        root,
        &[
            "--store",
            "./priya/",
            "login",
            "--server",
            &server.url,
            "--token",
            &token,
        ],
    ));
    assert!(out.status.success(), "{}", texts(&out).1);
    let out = run(casenote_in(
        &config,
        root,
        &["--store", "priya", "case", "new", "--name", "Moved Person"],
    ));
    assert!(out.status.success(), "{}", texts(&out).1);

    let absolute = root.join("priya");
    let nested = root.join("sub");
    std::fs::create_dir_all(&nested).unwrap();
    let spellings: Vec<(PathBuf, String)> = vec![
        (root.to_path_buf(), "priya".into()),
        (root.to_path_buf(), "./priya".into()),
        (root.to_path_buf(), "priya//".into()),
        (nested.clone(), "../priya/".into()),
        (nested.clone(), absolute.to_str().unwrap().to_string()),
    ];
    for (cwd, spelled) in &spellings {
        let out = run(casenote_in(
            &config,
            cwd,
            &["--store", spelled, "case", "list"],
        ));
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success() && stdout.contains("Moved Person"),
            "--store {spelled} from {}: {stderr}",
            cwd.display()
        );
    }

    // Moved (renamed, into another folder): still the same store, with the same key.
    let moved = root.join("elsewhere").join("priya-laptop");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&absolute, &moved).unwrap();
    let out = run(casenote_in(
        &config,
        root,
        &["--store", "elsewhere/priya-laptop/", "case", "list"],
    ));
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success() && stdout.contains("Moved Person"),
        "{stderr}"
    );
    assert_eq!(
        files_under(&config).len(),
        1,
        "one key file for one store: {:?}",
        files_under(&config)
    );
}

/// The key file name a store had before store ids: a hash of its absolute path.
fn legacy_key_name(store: &Path) -> String {
    use sha2::{Digest, Sha256};
    let absolute = std::path::absolute(store).unwrap();
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    format!("{}.key", hex_of(&digest[..16]))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes `store` look as a store from before store ids does: no id in its key envelope, and
/// its key file named by a hash of its path.
fn make_legacy(store: &Path, keys: &Path) {
    let key_file = files_under(keys).pop().expect("a key file");
    {
        let db = sled::open(store).unwrap();
        let tree = db.open_tree("casenote").unwrap();
        let envelope = tree.get(b"!").unwrap().expect("a key envelope");
        let mut v: Value = serde_json::from_slice(&envelope).unwrap();
        v.as_object_mut().unwrap().remove("id");
        tree.insert(b"!", serde_json::to_vec(&v).unwrap()).unwrap();
        db.flush().unwrap();
    }
    std::fs::rename(&key_file, keys.join(legacy_key_name(store))).unwrap();
}

#[test]
fn a_store_from_before_store_ids_finds_its_key_even_moved_and_takes_the_new_name() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let config = tmp.path().join("config");
    let keys = config.join("casenote").join("keys");
    let token = token_of(&staff, "Priya Shah");
    let root = tmp.path();
    let login = |store: &str| {
        let out = run(casenote_in(
            &config,
            root,
            &[
                "--store",
                store,
                "login",
                "--server",
                &server.url,
                "--token",
                &token,
            ],
        ));
        assert!(out.status.success(), "{}", texts(&out).1);
    };
    let list = |store: &str| {
        let out = run(casenote_in(
            &config,
            root,
            &["--store", store, "case", "list"],
        ));
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "--store {store}: {stderr}");
        stdout
    };

    // At its old place, spelled as it was.
    login("old");
    run(casenote_in(
        &config,
        root,
        &[
            "--store",
            "old",
            "case",
            "new",
            "--name",
            "Old Store Person",
        ],
    ));
    make_legacy(&root.join("old"), &keys);
    assert!(list("old").contains("Old Store Person"));
    let names: Vec<String> = files_under(&keys)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].starts_with("store-"),
        "the key file takes the store's id as its name: {names:?}"
    );
    assert!(list("./old/").contains("Old Store Person"));

    // Moved before it was ever opened by this version.
    std::fs::remove_dir_all(&keys).unwrap();
    std::fs::remove_dir_all(root.join("old")).unwrap();
    login("older");
    run(casenote_in(
        &config,
        root,
        &[
            "--store",
            "older",
            "case",
            "new",
            "--name",
            "Older Store Person",
        ],
    ));
    make_legacy(&root.join("older"), &keys);
    std::fs::rename(root.join("older"), root.join("older-moved")).unwrap();
    assert!(list("older-moved").contains("Older Store Person"));
    assert_eq!(files_under(&keys).len(), 1, "{:?}", files_under(&keys));
}

// 3. Only login creates a store.

#[test]
fn only_login_creates_a_store_and_a_failed_login_leaves_nothing_behind() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let config = tmp.path().join("config");
    let root = tmp.path();
    let token = token_of(&staff, "Priya Shah");

    for args in [
        &["case", "list"][..],
        &["status"],
        &["whoami"],
        &["sync"],
        &["case", "new", "--name", "Nobody"],
    ] {
        let mut all = vec!["--store", "./mrak"];
        all.extend_from_slice(args);
        let out = run(casenote_in(&config, root, &all));
        let (_, err) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("no device store at ./mrak") && err.contains("login"),
            "{args:?}: {err}"
        );
        assert!(!root.join("mrak").exists(), "{args:?} made a store");
        assert!(files_under(&config).is_empty(), "{args:?} made a key file");
    }

    let down = "http://127.0.0.1:9";
    for (server_url, token, code) in [
        (server.url.as_str(), "cn_not_a_token", 4),
        (down, token.as_str(), 3),
        ("127.0.0.1:8080", token.as_str(), 2),
    ] {
        let out = run(casenote_in(
            &config,
            root,
            &[
                "--store", "./new", "login", "--server", server_url, "--token", token,
            ],
        ));
        let (_, err) = texts(&out);
        assert_eq!(out.status.code(), Some(code), "{server_url}: {err}");
        assert!(!root.join("new").exists(), "a failed login left a store");
        assert!(
            files_under(&config).is_empty(),
            "a failed login left a key file"
        );
    }

    let out = run(casenote_in(
        &config,
        root,
        &[
            "--store",
            "./new",
            "login",
            "--server",
            &server.url,
            "--token",
            &token,
        ],
    ));
    assert!(out.status.success(), "{}", texts(&out).1);
    assert!(root.join("new").exists());
    assert_eq!(files_under(&config).len(), 1);
}

// 4. `show` is a page to read before knocking on the door.

#[test]
fn show_is_a_page_to_read_before_knocking_on_the_door() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let mark = device(&tmp, &server, &staff, "mark", "Mark Ellison");
    let case = priya.ok(&[
        "case",
        "new",
        "--name",
        "Alf Page",
        "--nhs-number",
        "9990000034",
        "--dob",
        "1938-05-01",
        "--address",
        "2 Mill Row",
    ]);
    priya.ok(&[
        "alert",
        "add",
        &case,
        "--text",
        "Visit in pairs: a dog on the stairs",
    ]);
    let resolved = priya.ok(&["alert", "add", &case, "--text", "Old alert, now over"]);
    priya.ok(&["alert", "status", &case, &resolved, "--status", "resolved"]);
    priya.ok(&[
        "plan",
        "set",
        &case,
        "--field",
        "discharge_date",
        "--value",
        "2026-12-20",
    ]);
    priya.ok(&["plan", "set", &case, "--field", "pathway", "--value", "1"]);
    priya.ok(&[
        "team",
        &case,
        "--org",
        "Castlebridge Council",
        "--team",
        "Locality Team North",
        "--role",
        "social worker",
        "--worker",
        "Priya Shah",
    ]);
    priya.ok(&[
        "plan",
        "goal",
        &case,
        "--text",
        "Back to the allotment by spring",
    ]);
    priya.ok(&[
        "plan",
        "action",
        &case,
        "--what",
        "Fit a key safe",
        "--who",
        "Mark, OT",
        "--by",
        "2026-12-15",
    ]);
    priya.ok(&[
        "plan",
        "append",
        &case,
        "--text",
        "Home with a morning call.",
    ]);
    priya.ok(&["plan", "agree", &case, "--with", "Alf and his daughter"]);
    priya.ok(&[
        "plan",
        "append",
        &case,
        "--text",
        " Meals on wheels from Monday.",
    ]);
    let first = priya.ok(&[
        "note",
        "add",
        &case,
        "--kind",
        "visit",
        "--text",
        "Seen at home on Monday.",
    ]);
    priya.ok(&["note", "file", &first]);
    let correction = priya.ok(&[
        "note",
        "amend",
        &first,
        "--reason",
        "wrong day",
        "--text",
        "It was Tuesday.",
        "--correction",
    ]);
    priya.sync();
    mark.sync();
    let marks = mark.ok(&[
        "note",
        "add",
        &case,
        "--kind",
        "phone",
        "--text",
        "Rang Alf's daughter.",
    ]);
    mark.ok(&["note", "file", &marks]);
    mark.sync();
    priya.sync();

    let page = priya.ok(&["show", &case]);
    let lines: Vec<&str> = page.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("the page lacks {needle:?}:\n{page}"))
    };
    // Alerts first, then who the person is.
    assert!(
        at("Visit in pairs: a dog on the stairs") < at("9990000034"),
        "{page}"
    );
    assert!(at("9990000034") < at("Discharge"), "{page}");
    assert!(
        !page.contains("Old alert, now over"),
        "a resolved alert among the active:\n{page}"
    );
    for needle in [
        "1938-05-01",
        "2 Mill Row",
        "2026-12-20",
        "Back to the allotment by spring",
        "Fit a key safe",
        "Mark, OT",
        "2026-12-15",
        "Locality Team North",
        "Alf and his daughter",
        "Home with a morning call. Meals on wheels from Monday.",
        "Seen at home on Monday.",
        "It was Tuesday.",
        "Rang Alf's daughter.",
    ] {
        at(needle);
    }
    assert!(lines[at("Discharge")].contains("pathway 1"), "{page}");
    assert!(
        lines[at("Alf and his daughter")].contains("changed since"),
        "{page}"
    );
    // Who wrote each note: Priya by name (her own device knows her), Mark by role and team.
    assert!(
        lines[at("Rang Alf's daughter.") - 1].contains("occupational therapist"),
        "{page}"
    );
    assert!(
        lines[at("Seen at home on Monday.") - 1].contains("Priya Shah"),
        "{page}"
    );
    // Amendments linked both ways.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("corrected by") && l.contains(&correction)),
        "{page}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("corrects") && l.contains(&first)),
        "{page}"
    );
    // The machine view keeps its shape.
    let v = priya.show(&case);
    assert!(plan_text(&v).contains("Home with a morning call."));
    assert_eq!(v["notes"].as_array().unwrap().len(), 3);
}

// 5. One spelling of every field.

/// Two devices set the discharge date of a new case differently while apart; returns the case.
fn discharge_date_conflict(a: &Cli, b: &Cli) -> String {
    let case = a.ok(&["case", "new", "--name", "Spelling Person"]);
    a.sync();
    b.sync();
    a.ok(&[
        "plan",
        "set",
        &case,
        "--field",
        "discharge_date",
        "--value",
        "2026-11-30",
    ]);
    b.ok(&[
        "plan",
        "set",
        &case,
        "--field",
        "discharge_date",
        "--value",
        "2026-12-02",
    ]);
    a.sync();
    b.sync();
    a.sync();
    case
}

#[test]
fn one_spelling_of_each_field_everywhere_and_an_unknown_field_is_an_error() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let b = device(&tmp, &server, &staff, "b", "Mark Ellison");
    let case = discharge_date_conflict(&a, &b);
    let listed = a.json(&["conflicts", &case, "--json"]);
    assert_eq!(listed[0]["path"][0], "discharge_date");

    // The spelling `conflicts` prints is the one `plan set` and `resolve` take; the dashed
    // spelling is read as it, and the CLI says so.
    let out = a.run(&[
        "resolve",
        &case,
        "--field",
        "discharge-date",
        "--value",
        "2026-12-02",
    ]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("discharge_date"), "{stdout}");
    assert!(
        stderr.contains("discharge_date"),
        "the mapping is said: {stderr}"
    );
    assert!(a
        .json(&["conflicts", &case, "--json"])
        .as_array()
        .unwrap()
        .is_empty());

    // Unknown fields are errors that name the valid ones.
    let (code, err) = a.fails(&["plan", "set", &case, "--field", "discharge", "--value", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("discharge_date") && err.contains("pathway"),
        "{err}"
    );
    let (code, err) = a.fails(&["resolve", &case, "--field", "dischargedate", "--value", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown field") && err.contains("discharge_date"),
        "{err}"
    );
    // A known field with nothing to resolve says so, and where to look.
    let (code, err) = a.fails(&["resolve", &case, "--field", "pathway", "--value", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nothing to resolve") && err.contains("conflicts"),
        "{err}"
    );
}

// 6. Messages say what happened and what to do, once.

#[test]
fn each_message_says_what_happened_and_what_to_do_once() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let case = priya.ok(&["case", "new", "--name", "Message Person"]);
    let once = |err: &str| {
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    };

    // A wrong token: said once, in words, with no HTTP.
    let fresh = Cli::new(tmp.path().join("fresh"));
    let (code, err) = fresh.fails(&["login", "--server", &server.url, "--token", "cn_0000"]);
    assert_eq!(code, 4, "{err}");
    once(&err);
    assert_eq!(err.matches("new one").count(), 1, "{err}");
    for word in ["Authorization", "Bearer", "header", "safe", "next sync"] {
        assert!(!err.contains(word), "{word:?} in {err}");
    }

    // A URL without a scheme is a usage error that says how to write it.
    let (code, err) = fresh.fails(&["login", "--server", "127.0.0.1:8080", "--token", "cn_0000"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("http://127.0.0.1:8080"), "{err}");
    assert!(
        !err.contains("RelativeUrlWithoutBase") && !err.contains("safe"),
        "{err}"
    );

    // A login to a server that is down: check the address; no talk of a next sync.
    let (code, err) = fresh.fails(&[
        "login",
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "cn_0000",
    ]);
    assert_eq!(code, 3, "{err}");
    once(&err);
    assert!(!err.contains("safe") && !err.contains("next sync"), "{err}");

    server.kill9();
    // History needs the server: it says so.
    let (code, err) = priya.fails(&["history", &case]);
    assert_eq!(code, 3, "{err}");
    once(&err);
    assert!(!err.contains("next sync") && !err.contains("safe"), "{err}");
    assert!(err.contains("history"), "{err}");
    // A sync says the edits are kept.
    let (code, err) = priya.fails(&["sync"]);
    assert_eq!(code, 3, "{err}");
    once(&err);
    assert!(err.contains("kept on this device"), "{err}");
}

// 7. The token need not be on the command line.

#[test]
fn the_token_can_come_from_the_environment_or_standard_input() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let token = token_of(&staff, "Priya Shah");

    let by_env = Cli::new(tmp.path().join("env"));
    let mut cmd = by_env.command(&["login", "--server", &server.url]);
    cmd.env("CASENOTE_TOKEN", &token);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", texts(&out).1);
    assert!(by_env.ok(&["whoami"]).contains("Priya Shah"));

    let by_stdin = Cli::new(tmp.path().join("stdin"));
    let mut child = by_stdin
        .command(&["login", "--server", &server.url, "--token", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", texts(&out).1);
    assert!(by_stdin.ok(&["whoami"]).contains("Priya Shah"));

    // No token anywhere and no terminal: a usage error naming the ways to give one.
    let none = Cli::new(tmp.path().join("none"));
    let out = none
        .command(&["login", "--server", &server.url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", texts(&out).1);
    let err = texts(&out).1;
    assert!(
        err.contains("CASENOTE_TOKEN") && err.contains("--token -"),
        "{err}"
    );

    // Help never shows the token an environment holds.
    let mut help = none.command(&["login", "--help"]);
    help.env("CASENOTE_TOKEN", &token);
    let out = help.output().unwrap();
    assert!(texts(&out).0.contains("CASENOTE_TOKEN"));
    assert!(!texts(&out).0.contains(&token), "help shows the token");
}

// 8. Progress on a terminal, quiet in scripts and with --json.

/// Runs `casenote args` for `cli` on a pseudo-terminal (util-linux `script`); returns what the
/// terminal showed.
fn on_terminal(cli: &Cli, args: &[&str]) -> String {
    let mut line = format!("'{CLI_BIN}' --store '{}'", cli.store.display());
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut config = cli.store.as_os_str().to_owned();
    config.push(".config");
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("XDG_CONFIG_HOME", config)
        .stdin(Stdio::null())
        .output()
        .expect("run script (util-linux)");
    assert!(out.status.success(), "{}", texts(&out).0);
    texts(&out).0
}

#[test]
fn a_long_sync_shows_progress_on_a_terminal_and_stays_quiet_in_scripts_and_json() {
    use rand::Rng;
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let case = priya.ok(&["case", "new", "--name", "Big Caseload"]);
    priya.sync();
    // Enough that the pull is paged: notes of text that does not compress, written with the
    // record API and pushed as Priya's device would (64 runs of the CLI took most of the test).
    let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ."
        .chars()
        .collect();
    let mut rng = rand::thread_rng();
    let token = token_of(&staff, "Priya Shah");
    let author = raw::staff_id(&server.url, &token);
    let case_id: casenote_protocol::CaseId = case.parse().unwrap();
    let notes: Vec<_> = (0..64)
        .map(|_| {
            let text: String = (0..120_000)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let mut doc = automerge::AutoCommit::new();
            let changes = craft::craft(&mut doc, author, |d| {
                record::init_note(d, &visit_by_priya(case_id, author, text)).unwrap()
            });
            let kind = casenote_protocol::DocKind::Note;
            craft::push_of(
                casenote_protocol::DocId::new_random(),
                case_id,
                kind,
                &[],
                &changes,
            )
        })
        .collect();
    for part in notes.chunks(16) {
        let r = raw::sync(
            &server.url,
            &token,
            casenote_protocol::Seq(0),
            part.to_vec(),
        );
        let r = r.expect("the notes are accepted");
        assert_eq!(r.acks.len(), part.len(), "{:?}", r.rejections);
    }

    let mark = device(&tmp, &server, &staff, "mark", "Mark Ellison");
    let shown = on_terminal(&mark, &["sync"]);
    assert!(
        shown.matches("so far").count() >= 1,
        "no progress on a terminal: {shown}"
    );
    assert!(shown.contains("received"), "{shown}");

    // A script sees the summary alone; --json on a terminal sees JSON alone.
    let quiet = device(&tmp, &server, &staff, "quiet", "Ruth Adebayo");
    let out = quiet.run(&["sync"]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "progress in a script: {stderr}");
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    let json = device(&tmp, &server, &staff, "json", "Mark Ellison");
    let shown = on_terminal(&json, &["sync", "--json"]);
    assert!(!shown.contains("so far"), "progress with --json: {shown}");
    let v: Value = serde_json::from_str(shown.trim()).expect("JSON alone");
    assert!(
        v["requests"].as_u64() >= Some(2),
        "the pull was not paged: {v}"
    );
}

/// A visit note by Priya Shah (as the demo has her: a social worker of the council's Locality
/// Team North) on `case`, written now.
fn visit_by_priya(
    case: casenote_protocol::CaseId,
    staff: casenote_protocol::StaffId,
    text: String,
) -> record::NewNote {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    record::NewNote {
        case_id: case,
        kind: record::NoteKind::Visit,
        author: record::NoteAuthor {
            staff_id: staff.to_string(),
            role: "social_worker".into(),
            org: "Castlebridge Council".into(),
            team: "Locality Team North".into(),
        },
        occurred_at_ms: now,
        recorded_at_ms: now,
        text,
        amends: None,
        late_entry_reason: None,
    }
}

// 9. The small things.

#[test]
fn counts_read_as_english() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let b = device(&tmp, &server, &staff, "b", "Mark Ellison");
    let case = discharge_date_conflict(&a, &b);
    let note = a.ok(&["note", "add", &case, "--text", "One note."]);
    a.ok(&["note", "file", &note]);
    let list = a.ok(&["case", "list"]);
    let line = list
        .lines()
        .find(|l| l.contains("Spelling Person"))
        .unwrap();
    assert!(
        line.contains("1 note,") || line.contains("1 note)"),
        "{line}"
    );
    assert!(!line.contains("1 notes"), "{line}");
    let page = a.ok(&["show", &case]);
    assert!(page.contains("1 conflicting field"), "{page}");
    assert!(!page.contains("1 conflicting fields"), "{page}");
}

#[test]
fn a_splice_past_the_end_names_the_position_given() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let case = priya.ok(&["case", "new", "--name", "Splice Person"]);
    priya.ok(&["plan", "append", &case, "--text", "Twelve chars"]);
    let (code, err) = priya.fails(&[
        "plan", "splice", &case, "--pos", "99999", "--delete", "5", "--text", "x",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("99999") && err.contains("12"), "{err}");
    assert!(!err.contains("100004"), "{err}");
    let (_, err) = priya.fails(&["plan", "splice", &case, "--pos", "10", "--delete", "5"]);
    assert!(
        err.contains("10") && err.contains('5') && err.contains("12"),
        "{err}"
    );
}

#[test]
fn conflicts_say_who_wrote_each_value() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let b = device(&tmp, &server, &staff, "b", "Mark Ellison");
    let case = discharge_date_conflict(&a, &b);
    let priya_id = a.json(&["whoami", "--json"])["staff_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mark_id = b.json(&["whoami", "--json"])["staff_id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = a.json(&["conflicts", &case, "--json"]);
    let by: Vec<&str> = listed[0]["written_by"]
        .as_array()
        .expect("who wrote each value")
        .iter()
        .map(|w| w["staff_id"].as_str().unwrap())
        .collect();
    assert_eq!(by.len(), 2);
    for (value, who) in listed[0]["values"].as_array().unwrap().iter().zip(&by) {
        let expected = if value == "2026-11-30" {
            &priya_id
        } else {
            &mark_id
        };
        assert_eq!(who, expected, "{listed}");
    }
    let shown = a.ok(&["conflicts", &case]);
    assert!(shown.contains("2026-11-30 (Priya Shah"), "{shown}");
    assert!(
        shown.contains(&format!("2026-12-02 (staff {mark_id}")),
        "{shown}"
    );
}

#[test]
fn status_reports_the_store_size_on_disk_and_what_its_records_take() {
    use rand::Rng;
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let status = |cli: &Cli| cli.json(&["status", "--json"]);
    let case = priya.ok(&["case", "new", "--name", "Size Person"]);
    let before = status(&priya);
    // 40 KB of text that does not compress.
    let mut rng = rand::thread_rng();
    let text: String = (0..40_000)
        .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
        .collect();
    priya.ok(&["note", "add", &case, "--text", &text]);
    let after = status(&priya);
    let records = |v: &Value| v["records_bytes"].as_u64().expect("records_bytes");
    assert!(
        records(&after) >= records(&before) + 30_000,
        "{} -> {}",
        records(&before),
        records(&after)
    );
    // On disk: sled's files and the reserve kept for a full disk, all of the directory.
    let on_disk = after["store_bytes"].as_u64().unwrap();
    let reserve = std::fs::metadata(priya.store.join("casenote.reserve"))
        .unwrap()
        .len();
    assert!(
        on_disk >= reserve + records(&after),
        "{on_disk} on disk: {after}"
    );
    let shown = priya.ok(&["status"]);
    assert!(shown.contains("reserve"), "{shown}");
}

#[test]
fn a_watch_in_which_every_sync_failed_exits_with_the_failure() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let mark = device(&tmp, &server, &staff, "mark", "Mark Ellison");
    server.kill9();
    let out = mark.run(&["sync", "--watch", "--for", "3s"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stderr.contains("every sync failed"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn the_readme_alias_works_from_any_directory() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let alias = readme
        .lines()
        .find(|l| l.trim_start().starts_with("alias casenote="))
        .expect("the README sets an alias")
        .trim()
        .to_string();
    // A checkout whose release binary is the CLI under test.
    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("casenote");
    std::fs::create_dir_all(checkout.join("target/release")).unwrap();
    std::os::unix::fs::symlink(CLI_BIN, checkout.join("target/release/casenote")).unwrap();
    std::fs::create_dir_all(tmp.path().join("work")).unwrap();
    let script = format!("shopt -s expand_aliases\n{alias}\ncd ../work\ncasenote --version\n");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&checkout)
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{alias}: {stderr}");
    assert!(stdout.contains("casenote"), "{stdout}");
}

/// The subcommand names a help text lists.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn help_lists_exit_codes_and_every_argument_has_a_help_line() {
    let help = |path: &[String]| {
        let mut cmd = Command::new(CLI_BIN);
        cmd.args(path).arg("--help");
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        texts(&out).0
    };
    let top = help(&[]);
    assert!(top.contains("Exit codes"), "{top}");
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 "] {
        assert!(
            top.lines().any(|l| l.trim_start().starts_with(code)),
            "exit code {code}not listed: {top}"
        );
    }
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut bare = Vec::new();
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let text = help(&path);
        seen += 1;
        for sub in subcommands(&text) {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
        let lines: Vec<&str> = text.lines().collect();
        let mut in_args = false;
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("Arguments:") || line.starts_with("Options:") {
                in_args = true;
                continue;
            }
            if !line.starts_with(' ') {
                in_args = false;
            }
            // An argument line is `  --flag <V>   help` or `  <ARG>   help` (the help is what
            // follows the first gap of two spaces or more), or, when the flag is long, the flag
            // alone with its help on the lines below, indented further.
            let t = line.trim();
            if in_args && (t.starts_with('-') || t.starts_with('<')) {
                let inline = t
                    .split_once("  ")
                    .is_some_and(|(_, h)| !h.trim().is_empty());
                let indent = line.len() - line.trim_start().len();
                let below = lines.get(i + 1).is_some_and(|next| {
                    let n = next.trim_start();
                    next.len() - n.len() > indent && !n.is_empty() && !n.starts_with('-')
                });
                if !inline && !below {
                    bare.push(format!("casenote {}: {t}", path.join(" ")));
                }
            }
        }
    }
    assert!(seen > 20, "only {seen} help pages");
    assert!(
        bare.is_empty(),
        "arguments without a help line:\n{}",
        bare.join("\n")
    );
}

#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    priya.sync();
    let case = priya.ok(&["case", "new", "--name", "Pipe Person"]);
    for _ in 0..3 {
        priya.ok(&[
            "plan",
            "append",
            &case,
            "--text",
            &"A long plan line.\n".repeat(5_000),
        ]);
    }
    let mut child = priya
        .command(&["show", &case, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader went away, as `| head -1` does
    let out = child.wait_with_output().unwrap();
    let err = texts(&out).1;
    assert!(!err.contains("panicked"), "{err}");
}
