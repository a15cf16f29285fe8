//! Safety-critical fields written concurrently are surfaced as conflicts and settled by a person,
//! and the settlement is recorded; late entries need a reason; an agreed plan shows when it has
//! changed since it was agreed.

mod common;
use common::*;
use serde_json::Value;

fn conflict_paths(dev: &Cli, case: &str) -> Vec<String> {
    dev.json(&["conflicts", case, "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["path"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect()
}

#[test]
fn two_offline_discharge_dates_show_as_a_conflict_until_a_person_resolves_it() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let b = device(&tmp, &server, &staff, "b", "Mark Ellison");
    let case = a.ok(&["case", "new", "--name", "Conflict Person"]);
    let alert = a.ok(&["alert", "add", &case, "--text", "Visit in pairs"]);
    let action = a.ok(&[
        "plan",
        "action",
        &case,
        "--what",
        "Fit a key safe",
        "--who",
        "OT",
        "--by",
        "2026-12-01",
    ]);
    a.ok(&["alert", "status", &case, &alert, "--status", "resolved"]);
    a.sync();
    b.sync();

    // Offline, both set the discharge date, the alert status and the action status differently.
    a.ok(&[
        "plan",
        "set",
        &case,
        "--field",
        "discharge-date",
        "--value",
        "2026-11-30",
    ]);
    b.ok(&[
        "plan",
        "set",
        &case,
        "--field",
        "discharge-date",
        "--value",
        "2026-12-02",
    ]);
    // A re-raises the alert; B resolves it (after a slip: writing the value it already has
    // makes no change at all, so B's last write is what conflicts).
    a.ok(&["alert", "status", &case, &alert, "--status", "active"]);
    b.ok(&["alert", "status", &case, &alert, "--status", "active"]);
    b.ok(&["alert", "status", &case, &alert, "--status", "resolved"]);
    a.ok(&["plan", "status", &case, &action, "--status", "done"]);
    b.ok(&["plan", "status", &case, &action, "--status", "cancelled"]);
    a.sync();
    b.sync();
    a.sync();

    let expected = {
        let mut v = vec![
            "discharge_date".to_string(),
            format!("alerts.{alert}.status"),
            format!("actions.{action}.status"),
        ];
        v.sort();
        v
    };
    for dev in [&a, &b] {
        let mut paths = conflict_paths(dev, &case);
        paths.sort();
        assert_eq!(
            paths, expected,
            "every concurrent safety-critical write is listed"
        );
    }
    let listed = a.json(&["conflicts", &case, "--json"]);
    let date = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"][0] == "discharge_date")
        .unwrap();
    let mut values: Vec<&str> = date["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    values.sort();
    assert_eq!(
        values,
        vec!["2026-11-30", "2026-12-02"],
        "both values are kept"
    );

    // Resolving something that is not in conflict is refused.
    let (_, err) = a.fails(&["resolve", &case, "--field", "pathway", "--value", "1"]);
    assert!(err.contains("nothing to resolve"), "{err}");

    a.ok(&[
        "resolve",
        &case,
        "--field",
        "discharge_date",
        "--value",
        "2026-12-02",
    ]);
    a.ok(&[
        "resolve",
        &case,
        "--field",
        &format!("alerts.{alert}.status"),
        "--value",
        "active",
    ]);
    a.ok(&[
        "resolve",
        &case,
        "--field",
        &format!("actions.{action}.status"),
        "--value",
        "done",
    ]);
    a.sync();
    b.sync();
    for dev in [&a, &b] {
        assert!(
            conflict_paths(dev, &case).is_empty(),
            "a resolved conflict is still listed"
        );
    }
    let show = b.show(&case);
    assert_eq!(show, a.show(&case));
    let plan = &show["plans"][0]["content"];
    assert_eq!(plan["discharge_date"], "2026-12-02");
    let resolutions: Vec<&Value> = plan["resolutions"].as_object().unwrap().values().collect();
    let date = resolutions
        .iter()
        .find(|r| r["field"] == "discharge_date")
        .expect("the resolution is recorded");
    assert_eq!(date["chosen"], "2026-12-02");
    assert!(
        date["replaced"].as_str().unwrap().contains("2026-11-30"),
        "the replaced value is kept in the record"
    );
    let priya = a.json(&["whoami", "--json"]);
    assert_eq!(date["by"], priya["staff_id"], "who resolved it is recorded");
}

#[test]
fn a_note_filed_a_day_late_needs_a_reason_and_keeps_both_times() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let dev = device(&tmp, &server, &staff, "dev", "Joe Ward");
    let case = dev.ok(&["case", "new", "--name", "Late Person"]);
    let note = dev.ok(&[
        "note",
        "add",
        &case,
        "--kind",
        "visit",
        "--occurred-at",
        "30h",
        "--text",
        "Joint visit.",
    ]);
    let (code, err) = dev.fails(&["note", "file", &note]);
    assert_eq!(code, 1);
    assert!(err.contains("late-entry reason"), "{err}");
    dev.ok(&[
        "note",
        "file",
        &note,
        "--late-entry-reason",
        "no signal at the farm; written up next day",
    ]);
    let show = dev.show(&case);
    let n = &show["notes"][0]["content"];
    assert_eq!(n["status"], "filed");
    assert_eq!(
        n["late_entry_reason"],
        "no signal at the farm; written up next day"
    );
    let gap = n["recorded_at_ms"].as_i64().unwrap() - n["occurred_at_ms"].as_i64().unwrap();
    assert!(
        gap >= 29 * 3_600_000,
        "occurred_at is what the worker stated, recorded_at the device clock"
    );
    let (_, err) = dev.fails(&[
        "note",
        "add",
        &case,
        "--text",
        "x",
        "--occurred-at",
        "yesterday-ish",
    ]);
    assert!(err.contains("neither a time"), "{err}");
}

#[test]
fn an_agreed_plan_shows_changed_since_agreed_after_a_colleagues_edit() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let b = device(&tmp, &server, &staff, "b", "Mark Ellison");
    let case = a.ok(&["case", "new", "--name", "Agreeing Person"]);
    a.ok(&[
        "plan",
        "append",
        &case,
        "--text",
        "Home with a morning call.",
    ]);
    a.ok(&["plan", "agree", &case, "--with", "the person and her son"]);
    a.sync();
    b.sync();
    let agreement = |dev: &Cli| dev.show(&case)["plans"][0]["agreement"].clone();
    assert_eq!(agreement(&b)["changed_since_agreed"], false);
    assert_eq!(agreement(&b)["with"], "the person and her son");
    b.ok(&["plan", "append", &case, "--text", " Evening call added."]);
    b.sync();
    a.sync();
    assert_eq!(agreement(&a)["changed_since_agreed"], true);
    a.ok(&["plan", "agree", &case, "--with", "the person"]);
    assert_eq!(agreement(&a)["changed_since_agreed"], false);
}
