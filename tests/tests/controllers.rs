//! Controllers, data-sharing agreements, objections and restructures end to end, with real
//! processes (issue 16): the council and the trust of the demo borough are separate controllers.
//! A trust device never receives a council document without an agreement between the two, is
//! backfilled when one is made, and deletes every trace when it ends; a person's objection takes
//! each controller's documents off the other's devices until an override is recorded; a team
//! moved to another organisation changes what its devices hold as `--records` says; a member of
//! staff cannot join a team of another organisation.
//!
//! "No trace" is checked as in access_changes.rs: the sealed bytes of the records as they were on
//! disk are searched for in every file of the device's store.

mod common;
use common::*;
use serde_json::Value;
use std::process::Command;

const COUNCIL: &str = "Castlebridge Council";
const TRUST: &str = "Castlebridge & Vale NHS Foundation Trust";
const CMHT: &str = "Community Mental Health Team";

/// `casenote-server admin STORE ARGS...` on a stopped store, which must fail: its stderr.
fn admin_fails(data: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["admin".to_string()];
    all.extend(store_args(data));
    all.extend(args.iter().map(|a| a.to_string()));
    let out = Command::new(SERVER_BIN)
        .args(&all)
        .output()
        .expect("run casenote-server");
    assert!(!out.status.success(), "admin {args:?} should have failed");
    String::from_utf8(out.stderr).unwrap()
}

/// Opens a case on `dev` with `marker` in a filed note, the plan and About Me, and syncs it;
/// the case id and the note's id.
fn case_with_marker(dev: &Cli, marker: &str) -> (String, String) {
    let case = dev.ok(&["case", "new", "--name", "Controller Person"]);
    let note = note_with_marker(dev, &case, marker);
    dev.ok(&["plan", "append", &case, "--text", marker]);
    dev.ok(&["about-me", "append", &case, "--text", marker]);
    dev.sync();
    (case, note)
}

/// Files a note holding `marker` on `case` from `dev`, and syncs; the note's id.
fn note_with_marker(dev: &Cli, case: &str, marker: &str) -> String {
    let note = dev.ok(&["note", "add", case, "--text", marker]);
    dev.ok(&["note", "file", &note]);
    dev.sync();
    note
}

/// The sealed records `dev` holds of each of `docs`.
fn sealed(dev: &Cli, docs: &[&str]) -> Vec<Vec<u8>> {
    docs.iter().flat_map(|d| dev.sealed_records_of(d)).collect()
}

/// Asserts that `dev` holds `marker` and every one of `records` is in its files.
fn holds(dev: &Cli, marker: &str, records: &[Vec<u8>], what: &str) {
    assert!(contains(&dev.decrypted_bytes(), marker), "{what}: marker");
    assert!(
        all_in(&all_bytes_under(&dev.store), records),
        "{what}: files"
    );
}

/// Asserts that neither `marker` nor any of `records` is anywhere in `dev`'s store.
fn no_trace(dev: &Cli, marker: &str, records: &[Vec<u8>], what: &str) {
    assert!(!contains(&dev.decrypted_bytes(), marker), "{what}: marker");
    assert!(
        !any_in(&all_bytes_under(&dev.store), records),
        "{what}: files"
    );
}

/// The audit entries of the server's store whose `action` is `action`.
fn audited(server: &Server, token: &str, action: &str) -> Vec<Value> {
    let out = Command::new(SERVER_BIN)
        .args(["audit", "show", "--json", "--server", server.url.as_str()])
        .env("CASENOTE_ADMIN_TOKEN", token)
        .env_remove("CASENOTE_POSTGRES_URL")
        .output()
        .expect("run casenote-server");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter()
        .filter(|e| e["details"]["action"] == action)
        .collect()
}

fn demo_with_admin_in(tmp: &tempfile::TempDir) -> (std::path::PathBuf, Vec<Staff>, String) {
    let data = tmp.path().join("server");
    let (staff, admin_token) = demo_with_admin(&data);
    (data, staff, admin_token)
}

fn end_demo_agreement(data: &std::path::Path) {
    admin(
        data,
        &["agreement", "end", "--between", COUNCIL, "--and", TRUST],
    );
}

#[test]
fn a_trust_team_holds_council_documents_only_under_an_agreement_and_none_once_it_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, staff, token) = demo_with_admin_in(&tmp);
    // The demo records the agreement between its council and its trust.
    let list: Value =
        serde_json::from_str(&admin(&data, &["agreement", "list", "--json"])).unwrap();
    let agreements = list["agreements"].as_array().unwrap();
    assert_eq!(agreements.len(), 1, "{list}");
    let mut names: Vec<&str> = agreements[0]["org_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    names.sort();
    let mut expected = [COUNCIL, TRUST];
    expected.sort();
    assert_eq!(names, expected);
    end_demo_agreement(&data);

    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let grace = device(&tmp, &server, &staff, "grace", "Grace Liu");
    let marker = "MARKER-council-controls-this-3b7a";
    let (case, note) = case_with_marker(&priya, marker);
    admin_api_ok(
        &server,
        &token,
        &["case", "add-team", "--case", &case, "--team", "Ward 7"],
    );
    grace.sync();
    assert!(!contains(&grace.decrypted_bytes(), marker), "no agreement");
    assert!(grace.sealed_records_of(&case).is_empty());
    assert!(grace.sealed_records_of(&note).is_empty());
    assert!(!case_ids(&grace).contains(&case));

    // An agreement: the next sync backfills the council's documents.
    let purpose = "discharge-planning-purpose-text";
    admin_api_ok(
        &server,
        &token,
        &[
            "agreement",
            "add",
            "--between",
            TRUST,
            "--and",
            COUNCIL,
            "--purpose",
            purpose,
        ],
    );
    grace.sync();
    assert!(case_ids(&grace).contains(&case));
    let records = sealed(&grace, &[&case, &note]);
    holds(&grace, marker, &records, "under the agreement");
    assert_eq!(grace.show(&case), priya.show(&case));

    // It ends: the next sync deletes every trace from the trust device, none from the council's.
    admin_api_ok(
        &server,
        &token,
        &["agreement", "end", "--between", COUNCIL, "--and", TRUST],
    );
    let report = grace.sync();
    assert!(
        report["evicted"].as_u64().unwrap() >= 3,
        "case, plan and note should be evicted: {report}"
    );
    assert!(!case_ids(&grace).contains(&case));
    no_trace(&grace, marker, &records, "after the agreement ended");
    priya.sync();
    assert!(contains(&priya.decrypted_bytes(), marker));

    // Audited with ids and the access epoch, never the purpose's text.
    let added = audited(&server, &token, "agreement_add");
    let ended = audited(&server, &token, "agreement_end");
    assert_eq!(
        (added.len(), ended.len()),
        (2, 2),
        "demo's, ours; ours twice"
    );
    assert!(added[1]["details"]["access_epoch"].is_u64());
    assert!(added[1]["details"]["by"]["via"] == "admin");
    assert!(!audited(&server, &token, "agreement_add")
        .iter()
        .any(|e| e.to_string().contains(purpose)));
}

#[test]
fn an_objection_takes_each_controllers_documents_off_the_others_devices_until_overridden() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, staff, token) = demo_with_admin_in(&tmp);
    let data = _data;
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let grace = device(&tmp, &server, &staff, "grace", "Grace Liu");
    let council_marker = "MARKER-council-note-under-objection-91fe";
    let trust_marker = "MARKER-trust-note-under-objection-c40d";
    let (case, council_note) = case_with_marker(&priya, council_marker);
    admin_api_ok(
        &server,
        &token,
        &["case", "add-team", "--case", &case, "--team", "Ward 7"],
    );
    grace.sync();
    let trust_note = note_with_marker(&grace, &case, trust_marker);
    priya.sync();
    let council_records = sealed(&grace, &[&case, &council_note]);
    holds(&grace, council_marker, &council_records, "shared");
    let trust_records = sealed(&priya, &[&trust_note]);
    holds(&priya, trust_marker, &trust_records, "shared");

    // The person objects: each side keeps only its own organisation's documents.
    let out = admin_api_ok(&server, &token, &["case", "object", "--case", &case]);
    assert!(out.contains("stands"), "{out}");
    let shown = admin_api_ok(&server, &token, &["case", "show", "--case", &case]);
    assert!(shown.contains("Objection to sharing: Person"), "{shown}");
    grace.sync();
    priya.sync();
    no_trace(&grace, council_marker, &council_records, "trust device");
    no_trace(&priya, trust_marker, &trust_records, "council device");
    assert!(contains(&grace.decrypted_bytes(), trust_marker), "own");
    assert!(contains(&priya.decrypted_bytes(), council_marker), "own");

    // Safeguarding overrides it: sharing goes on under the agreement.
    let out = admin_api_ok(
        &server,
        &token,
        &[
            "case",
            "override",
            "--case",
            &case,
            "--reason-category",
            "safeguarding",
        ],
    );
    assert!(out.contains("overridden (safeguarding)"), "{out}");
    grace.sync();
    priya.sync();
    assert!(contains(&grace.decrypted_bytes(), council_marker));
    assert!(contains(&priya.decrypted_bytes(), trust_marker));

    // The override ends: the objection stands again; withdrawn, sharing is back.
    admin_api_ok(&server, &token, &["case", "override-end", "--case", &case]);
    grace.sync();
    assert!(!contains(&grace.decrypted_bytes(), council_marker));
    admin_api_ok(
        &server,
        &token,
        &["case", "object-withdraw", "--case", &case],
    );
    grace.sync();
    assert!(contains(&grace.decrypted_bytes(), council_marker));

    for (action, category) in [
        ("case_object", Some("person")),
        ("case_override", Some("safeguarding")),
        ("case_override_end", None),
        ("case_object_withdraw", None),
    ] {
        let entries = audited(&server, &token, action);
        assert_eq!(entries.len(), 1, "{action}");
        let d = &entries[0]["details"];
        assert_eq!(d["case_id"], case.as_str(), "{action}");
        assert!(d["access_epoch"].is_u64(), "{action}");
        if let Some(c) = category {
            assert_eq!(d["reason_category"], c, "{action}");
        }
    }
    // Overriding what is not objected to is refused plainly.
    let out = admin_over_api(
        &server,
        &token,
        &[
            "case",
            "override",
            "--case",
            &case,
            "--reason-category",
            "court-order",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no objection"));
}

#[test]
fn a_team_moved_with_its_records_staying_reads_its_old_organisations_records_only_by_agreement() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, staff, token) = demo_with_admin_in(&tmp);
    end_demo_agreement(&data);
    let server = Server::start(&data);
    let joe = device(&tmp, &server, &staff, "joe", "Joe Ward");
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let trust_marker = "MARKER-trust-case-of-the-cmht-5a11";
    let council_marker = "MARKER-council-case-the-cmht-joins-8e20";
    let (trust_case, trust_note) = case_with_marker(&joe, trust_marker);
    let (council_case, _) = case_with_marker(&priya, council_marker);
    admin_api_ok(
        &server,
        &token,
        &["case", "add-team", "--case", &council_case, "--team", CMHT],
    );
    joe.sync();
    assert!(
        !contains(&joe.decrypted_bytes(), council_marker),
        "no agreement"
    );
    let trust_records = sealed(&joe, &[&trust_case, &trust_note]);
    holds(&joe, trust_marker, &trust_records, "own case");

    // The mental health team goes back to the council; its records stay with the trust.
    let out = admin_api_ok(
        &server,
        &token,
        &[
            "team",
            "move",
            "--team",
            CMHT,
            "--to-org",
            COUNCIL,
            "--records",
            "stay",
        ],
    );
    assert!(out.contains("with 2 staff"), "{out}");
    joe.sync();
    assert!(
        contains(&joe.decrypted_bytes(), council_marker),
        "now his own org's"
    );
    no_trace(&joe, trust_marker, &trust_records, "the trust's records");
    assert!(!case_ids(&joe).contains(&trust_case));

    // Under an agreement, they come back.
    admin_api_ok(
        &server,
        &token,
        &["agreement", "add", "--between", COUNCIL, "--and", TRUST],
    );
    joe.sync();
    assert!(contains(&joe.decrypted_bytes(), trust_marker));

    let moved = audited(&server, &token, "team_move");
    assert_eq!(moved.len(), 1);
    let d = &moved[0]["details"];
    assert_eq!(
        (d["records"].as_str(), d["staff"].as_u64()),
        (Some("stay"), Some(2))
    );
    assert_eq!(d["docs_moved"], 0);
    assert!(d["access_epoch"].is_u64());
    let dir: Value =
        serde_json::from_str(&admin_api_ok(&server, &token, &["list", "--json"])).unwrap();
    let council_id = dir["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == COUNCIL)
        .unwrap()["org_id"]
        .clone();
    let joe_rec = dir["staff"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Joe Ward")
        .unwrap();
    assert_eq!(
        joe_rec["org_id"], council_id,
        "the staff moved with the team"
    );
}

#[test]
fn a_team_moved_with_its_records_takes_them_to_the_new_controller_and_members_on_other_teams_are_named(
) {
    let tmp = tempfile::tempdir().unwrap();
    let (data, staff, token) = demo_with_admin_in(&tmp);
    end_demo_agreement(&data);
    let server = Server::start(&data);
    let joe = device(&tmp, &server, &staff, "joe", "Joe Ward");
    let grace = device(&tmp, &server, &staff, "grace", "Grace Liu");
    let marker = "MARKER-cmht-case-moving-with-its-team-77c3";
    let (case, note) = case_with_marker(&joe, marker);
    admin_api_ok(
        &server,
        &token,
        &["case", "add-team", "--case", &case, "--team", "Ward 7"],
    );
    grace.sync();
    let records = sealed(&grace, &[&case, &note]);
    holds(&grace, marker, &records, "same trust");
    // Grace's own note on the case is hers, not the team's: it stays with the trust.
    let ward_marker = "MARKER-ward-note-stays-with-the-trust-0b9e";
    let ward_note = note_with_marker(&grace, &case, ward_marker);
    joe.sync();
    let ward_records = sealed(&joe, &[&ward_note]);
    holds(&joe, ward_marker, &ward_records, "same trust");

    // Joe is also on Ward 7: the move is refused, naming him, until the flag says what to do.
    admin_api_ok(
        &server,
        &token,
        &[
            "staff", "add-team", "--staff", "Joe Ward", "--team", "Ward 7",
        ],
    );
    let joe_id = raw::staff_id(&server.url, &token_of(&staff, "Joe Ward")).to_string();
    let move_args = [
        "team",
        "move",
        "--team",
        CMHT,
        "--to-org",
        COUNCIL,
        "--records",
        "move",
    ];
    let out = admin_over_api(&server, &token, &move_args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&joe_id) && err.contains("--leave-other-teams"),
        "{err}"
    );
    let mut with_flag = move_args.to_vec();
    with_flag.push("--leave-other-teams");
    let out = admin_api_ok(&server, &token, &with_flag);
    assert!(out.contains("1 other team memberships ended"), "{out}");

    // The records went with the team: Joe keeps them, the trust's ward no longer holds them.
    joe.sync();
    assert!(contains(&joe.decrypted_bytes(), marker));
    no_trace(&joe, ward_marker, &ward_records, "the trust's note");
    let report = grace.sync();
    assert!(report["evicted"].as_u64().unwrap() >= 3, "{report}");
    no_trace(&grace, marker, &records, "moved to the council");
    assert!(contains(&grace.decrypted_bytes(), ward_marker), "her own");
    let d = &audited(&server, &token, "team_move")[0]["details"];
    assert!(d["docs_moved"].as_u64().unwrap() >= 3, "{d}");
    assert_eq!(d["left_teams"], 1);
}

#[test]
fn a_member_of_staff_cannot_join_a_team_of_another_organisation() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _staff, _token) = demo_with_admin_in(&tmp);
    let err = admin_fails(
        &data,
        &[
            "staff",
            "add-team",
            "--staff",
            "Priya Shah",
            "--team",
            "Ward 7",
        ],
    );
    assert!(err.contains("belongs to another organisation"), "{err}");
    let err = admin_fails(
        &data,
        &[
            "staff",
            "add",
            "--name",
            "New Starter",
            "--role",
            "nurse",
            "--org",
            COUNCIL,
            "--team",
            "Ward 7",
        ],
    );
    assert!(
        err.contains(TRUST) && err.contains("own organisation"),
        "{err}"
    );
    let dir: Value = serde_json::from_str(&admin(&data, &["list", "--json"])).unwrap();
    assert!(
        !dir.to_string().contains("New Starter"),
        "nothing was added"
    );
}
