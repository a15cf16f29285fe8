//! Retention end to end, with real processes and a real clock moved forward: libfaketime
//! (`LD_PRELOAD`) shifts the admin command's wall clock years ahead, as the years would. A record
//! is classified, closed, kept until its due day, held, reopened and closed again, approved and
//! disposed of; the disposal reaches the device, which deletes the record and rewrites its files.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// Where Debian's `faketime` package puts the library (`scripts/test` installs it).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Nine years on: past an adult record's eight, short of a mental health record's twenty.
const NINE_YEARS: &str = "+3288d";

/// `casenote-server admin <store> ARGS...` with the wall clock shifted by `offset` (`None`: now).
fn admin_at(data: &Path, offset: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(SERVER_BIN);
    cmd.arg("admin").args(store_args(data)).args(args);
    if let Some(offset) = offset {
        assert!(
            Path::new(FAKETIME_LIB).exists(),
            "{FAKETIME_LIB} is missing: install Debian's `faketime` package (scripts/test does)"
        );
        cmd.env("LD_PRELOAD", FAKETIME_LIB)
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("FAKETIME_NO_CACHE", "1");
    }
    cmd.output().expect("run casenote-server admin")
}

fn ok_at(data: &Path, offset: Option<&str>, args: &[&str]) -> String {
    let out = admin_at(data, offset, args);
    assert!(
        out.status.success(),
        "admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The admin command must be refused; its error message.
fn refused_at(data: &Path, offset: Option<&str>, args: &[&str]) -> String {
    let out = admin_at(data, offset, args);
    assert!(
        !out.status.success(),
        "admin {args:?} was not refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn show(data: &Path, offset: Option<&str>, case: &str) -> Value {
    let out = ok_at(
        data,
        offset,
        &["retention", "show", "--case", case, "--json"],
    );
    serde_json::from_str(&out).expect("retention show --json prints JSON")
}

fn due_cases(data: &Path, offset: Option<&str>) -> Vec<String> {
    let out = ok_at(data, offset, &["retention", "list", "--due", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["case_id"].as_str().unwrap().to_string())
        .collect()
}

/// The cases `retention list --json` names as having no class.
fn unclassified(data: &Path) -> Vec<String> {
    let out = ok_at(data, None, &["retention", "list", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["unclassified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

/// Backs the stopped store of `data` up and restores it into `to` (a fresh store); returns `to`.
fn backed_up_and_restored(data: &Path, to: &Path) -> std::path::PathBuf {
    let file = to.with_extension("backup");
    ok_at(data, None, &["backup", "--out", file.to_str().unwrap()]);
    let mut args = vec![
        "restore".to_string(),
        "--from".into(),
        file.display().to_string(),
    ];
    args.extend(store_args(to));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    server_cmd(&args);
    to.to_path_buf()
}

/// Opens a case on `dev` with `marker` in a filed note and the plan, and syncs it.
fn case_with_marker(dev: &Cli, marker: &str) -> String {
    let case = dev.ok(&["case", "new", "--name", "Retained Person"]);
    let note = dev.ok(&["note", "add", &case, "--text", marker]);
    dev.ok(&["note", "file", &note]);
    dev.ok(&["plan", "append", &case, "--text", marker]);
    dev.sync();
    case
}

#[test]
fn a_record_is_kept_until_due_blocked_by_a_hold_and_disposed_of_only_once_approved() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let marker = "MARKER-retention-disposal-5e1c";
    let case = case_with_marker(&priya, marker);
    let sealed = priya.sealed_records_of(&case);
    assert!(
        all_in(&all_bytes_under(&priya.store), &sealed),
        "positive control: the case's sealed records are in Priya's store files"
    );

    let server = server.offline(|data| {
        assert!(
            contains(&server_store_bytes(data), marker),
            "positive control: the marker is in the server's store files"
        );
        let c = case.as_str();
        let err = refused_at(data, None, &["retention", "approve", "--case", c]);
        assert!(err.contains("no retention class"), "{err}");
        assert!(
            unclassified(data).contains(&case),
            "an unclassified case is listed"
        );
        ok_at(
            data,
            None,
            &[
                "retention",
                "set",
                "--case",
                c,
                "--class",
                "adult_social_care",
            ],
        );
        assert!(!unclassified(data).contains(&case));
        let err = refused_at(data, None, &["retention", "approve", "--case", c]);
        assert!(err.contains("it is open"), "{err}");

        // Closed on a last contact years before its last change: due, but the change after it
        // makes the closure out of date.
        ok_at(
            data,
            None,
            &[
                "retention",
                "close",
                "--case",
                c,
                "--last-contact",
                "2015-01-05",
            ],
        );
        assert_eq!(show(data, None, c)["state"], "due");
        let err = refused_at(data, None, &["retention", "approve", "--case", c]);
        assert!(err.contains("after its last contact"), "{err}");

        // Closed today: kept eight years.
        ok_at(data, None, &["retention", "close", "--case", c]);
        let now = show(data, None, c);
        let today = now["last_contact"].as_str().unwrap().to_string();
        let (y, rest) = today.split_at(4);
        let due = format!("{}{rest}", y.parse::<i32>().unwrap() + 8);
        assert_eq!(now["state"], "retained");
        assert_eq!(now["due"].as_str(), Some(due.as_str()), "{now}");
        assert!(!due_cases(data, None).contains(&case));
        let err = refused_at(data, None, &["retention", "approve", "--case", c]);
        assert!(err.contains(&format!("kept until {due}")), "{err}");

        // Nine years on it is due; a legal hold blocks approval until released.
        let later = Some(NINE_YEARS);
        assert!(due_cases(data, later).contains(&case));
        ok_at(
            data,
            later,
            &["retention", "hold", "--case", c, "--reason", "litigation"],
        );
        let held = show(data, later, c);
        assert_eq!(held["state"], "held");
        let err = refused_at(data, later, &["retention", "approve", "--case", c]);
        assert!(err.contains("legal hold"), "{err}");
        let hold = held["holds"][0]["hold_id"].as_str().unwrap().to_string();
        ok_at(
            data,
            later,
            &["retention", "release", "--case", c, "--hold", &hold],
        );

        // Reopening stops the clock; an approval lapses with it.
        ok_at(data, later, &["retention", "approve", "--case", c]);
        assert_eq!(show(data, later, c)["state"], "approved");
        ok_at(data, later, &["retention", "reopen", "--case", c]);
        assert_eq!(show(data, later, c)["state"], "open");
        assert!(!due_cases(data, later).contains(&case));
        let err = refused_at(data, later, &["retention", "dispose", "--case", c]);
        assert!(err.contains("not been approved"), "{err}");

        // Closed again on its real last contact: due, approved, disposed of.
        ok_at(
            data,
            later,
            &["retention", "close", "--case", c, "--last-contact", &today],
        );
        ok_at(data, later, &["retention", "approve", "--case", c]);
        ok_at(data, later, &["retention", "dispose", "--case", c]);
        let stub = show(data, later, c);
        assert_eq!(stub["state"], "disposed", "{stub}");
        assert!(
            stub["disposed"]["documents"].as_u64().unwrap() >= 3,
            "{stub}"
        );
        assert_eq!(stub["disposed"]["approved_by"]["via"], "cli", "{stub}");
        let err = refused_at(data, later, &["retention", "dispose", "--case", c]);
        assert!(err.contains("disposed of"), "{err}");
        // The stub moves with a backup.
        let restored = backed_up_and_restored(data, &tmp.path().join("restored"));
        let copied = show(&restored, later, c);
        assert_eq!(copied["disposed"], stub["disposed"], "{copied}");
        assert!(
            !contains(&server_store_bytes(data), marker),
            "the disposed record's text is left in the server's store files"
        );
    });

    // The disposal reaches the device: the case goes, files rewritten.
    let report = priya.sync();
    assert!(
        report["evicted"].as_u64().unwrap() >= 3,
        "case, plan and note should be evicted: {report}"
    );
    assert!(!case_ids(&priya).contains(&case));
    assert!(
        !any_in(&all_bytes_under(&priya.store), &sealed),
        "a trace of the disposed record (its sealed records) is left in Priya's store files"
    );
    assert!(!contains(&priya.decrypted_bytes(), marker));
    priya.sync();

    // Every step is in the audit chain, which still verifies.
    drop(server);
    server_cmd_on(&["audit", "verify"], &data, &[]);
    let steps: Vec<String> = audit_entries(&data)
        .iter()
        .filter(|e| e["kind"] == "retention")
        .map(|e| e["details"]["what"].as_str().unwrap().to_string())
        .collect();
    for what in [
        "set", "closed", "held", "released", "approved", "reopened", "disposed",
    ] {
        assert!(steps.iter().any(|s| s == what), "no `{what}` in {steps:?}");
    }
}

#[test]
fn retention_classes_give_their_due_days_and_bad_input_is_refused_clearly() {
    let (_tmp, data, _staff) = demo_borough();
    let server = Server::start(&data);
    let priya = Cli::login(
        _tmp.path().join("priya"),
        &server,
        &token_of(&_staff, "Priya Shah"),
    );
    let case = case_with_marker(&priya, "MARKER-retention-classes");
    drop(server);
    let c = case.as_str();

    let err = refused_at(
        &data,
        None,
        &["retention", "set", "--case", c, "--class", "children"],
    );
    assert!(err.contains("date of birth"), "{err}");
    let err = refused_at(
        &data,
        None,
        &["retention", "set", "--case", c, "--class", "gardening"],
    );
    assert!(
        err.contains("adult_social_care"),
        "the valid classes are named: {err}"
    );
    let err = refused_at(
        &data,
        None,
        &[
            "retention",
            "close",
            "--case",
            c,
            "--last-contact",
            "31/01/2020",
        ],
    );
    assert!(err.contains("YYYY-MM-DD"), "{err}");
    let other = "00000000-0000-4000-8000-000000000001";
    let err = refused_at(&data, None, &["retention", "show", "--case", other]);
    assert!(err.contains("no case"), "{err}");

    ok_at(
        &data,
        None,
        &[
            "retention",
            "set",
            "--case",
            c,
            "--class",
            "children",
            "--born",
            "2010-06-01",
        ],
    );
    ok_at(
        &data,
        None,
        &[
            "retention",
            "close",
            "--case",
            c,
            "--last-contact",
            "2026-03-04",
        ],
    );
    assert_eq!(show(&data, None, c)["due"], "2035-06-01");
    ok_at(
        &data,
        None,
        &["retention", "set", "--case", c, "--class", "mental_health"],
    );
    assert_eq!(show(&data, None, c)["due"], "2046-03-04");
    ok_at(
        &data,
        None,
        &["retention", "set", "--case", c, "--class", "health"],
    );
    assert_eq!(show(&data, None, c)["due"], "2034-03-04");
}

#[test]
fn retention_is_managed_over_the_admin_api_too() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let (staff, admin_token) = demo_with_admin(&data);
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let case = case_with_marker(&priya, "MARKER-retention-api");
    let api = |args: &[&str]| admin_over_api(&server, &admin_token, args);
    let c = case.as_str();
    let out = api(&["retention", "set", "--case", c, "--class", "health"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = api(&["retention", "hold", "--case", c, "--reason", "complaint"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = api(&["retention", "show", "--case", c, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "held");
    assert_eq!(v["holds"][0]["reason"], "complaint");
    assert_eq!(v["holds"][0]["placed_by"]["via"], "admin", "{v}");
    let out = api(&["retention", "approve", "--case", c]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("legal hold") && err.contains("422"), "{err}");
}
