//! The server's command line as an operator meets it (issue 17's server-side points): a mistyped
//! `--data` names the problem and creates nothing, and the demo borough reads as the field client
//! writes (plan actions carry `by`; every edit carries the time it stands for, not 1970).

mod common;

use common::*;
use std::process::Command;

#[test]
fn admin_on_a_directory_with_no_store_says_so_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("mistyped");
    for args in [
        vec!["admin", "--data", missing.to_str().unwrap(), "list"],
        vec!["audit", "show", "--data", missing.to_str().unwrap()],
        vec!["verify", "--data", missing.to_str().unwrap()],
    ] {
        let out = Command::new(SERVER_BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("there is no casenote store in"),
            "{args:?}: {err}"
        );
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
}

#[test]
fn the_demo_reads_as_the_field_client_writes_it() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let mark = staff.iter().find(|s| s.name == "Mark Ellison").unwrap();
    let cli = Cli::login(tmp.path().join("mark"), &server, &mark.token);
    cli.sync();
    let cases = cli.json(&["case", "list", "--json"]);
    let mut actions = 0;
    let mut entries = 0;
    for case in cases.as_array().unwrap() {
        let case_id = case["case_id"].as_str().unwrap();
        let shown = cli.show(case_id);
        for plan in shown["plans"].as_array().unwrap() {
            for action in plan["content"]["actions"].as_object().into_iter().flatten() {
                actions += 1;
                assert!(
                    action.1["by"].is_string(),
                    "an action without `by`: {action:?}"
                );
                assert!(action.1.get("by_when").is_none(), "{action:?}");
            }
            let plan_id = plan["doc_id"].as_str().unwrap();
            for e in cli
                .json(&["history", plan_id, "--json"])
                .as_array()
                .unwrap()
            {
                entries += 1;
                let device_ms = e["device_time_ms"].as_i64().unwrap();
                // 2020-01-01: the demo's edits stand for days before now, never for 1970.
                assert!(
                    device_ms > 1_577_836_800_000,
                    "a device clock of {device_ms} ms"
                );
            }
        }
    }
    assert!(
        actions > 0 && entries > 0,
        "the demo shows no plan actions or history"
    );
}
