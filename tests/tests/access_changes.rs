//! Who may see what, end to end with real processes: a device outside a case never receives a
//! byte of it; removing a team or revoking a device leaves no trace of the records in the device's
//! store files; a forged change is refused and reaches nobody; a tampered audit entry is caught.
//!
//! Device stores are encrypted, so a marker is never in their files in the clear. What a store
//! holds is checked by opening it under its key; "no trace" is checked against the sealed bytes
//! of the records as they were on disk: after an eviction or a wipe not even those are left.

mod common;
use automerge::transaction::Transactable;
use automerge::{Author, AutoCommit, ROOT};
use casenote_protocol::wire::{self, DocPush};
use casenote_protocol::{DocKind, ErrorCode, Seq, StaffId};
use common::*;
use serde_bytes::ByteBuf;

/// Opens a case on `dev` with `marker` in a note, the plan and About Me, and syncs it.
fn case_with_marker(dev: &Cli, marker: &str) -> String {
    let case = dev.ok(&["case", "new", "--name", "Marker Person"]);
    let note = dev.ok(&["note", "add", &case, "--text", marker]);
    dev.ok(&["note", "file", &note]);
    dev.ok(&["plan", "append", &case, "--text", marker]);
    dev.ok(&["about-me", "append", &case, "--text", marker]);
    dev.sync();
    case
}

#[test]
fn a_device_of_a_team_not_on_the_case_never_receives_a_byte_of_it() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let lena = device(&tmp, &server, &staff, "lena", "Lena Fischer");
    let marker = "MARKER-never-leaves-locality-north-5c1e";
    let case = case_with_marker(&priya, marker);
    lena.sync();
    assert!(
        contains(&priya.decrypted_bytes(), marker),
        "the marker is not in the author's own store, so its absence proves nothing"
    );
    assert!(
        !contains(&lena.decrypted_bytes(), marker),
        "the marker reached a device of a team not on the case"
    );
    assert!(lena.sealed_records_of(&case).is_empty());
    assert!(!contains(&all_bytes_under(&lena.store), marker));
    assert!(!case_ids(&lena).contains(&case));
}

#[test]
fn removing_a_team_from_a_case_leaves_no_trace_of_it_on_that_teams_device() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let sam = device(&tmp, &server, &staff, "sam", "Sam Kowalski");
    let marker = "MARKER-discharge-hub-only-while-on-case-77d2";
    let case = case_with_marker(&priya, marker);
    sam.sync();
    assert!(
        !case_ids(&sam).contains(&case),
        "Sam's team is not on the case yet"
    );

    // The hospital discharge hub joins the case: its documents flow to Sam on the next sync.
    let server = server.offline(|data| {
        admin(
            data,
            &[
                "case",
                "add-team",
                "--case",
                &case,
                "--team",
                "Hospital Discharge Hub",
            ],
        );
    });
    sam.sync();
    assert!(
        case_ids(&sam).contains(&case),
        "adding the team did not bring the case"
    );
    assert_eq!(sam.show(&case), priya.show(&case));
    assert!(
        contains(&sam.decrypted_bytes(), marker),
        "positive control: the marker is in Sam's store"
    );
    let sealed = sam.sealed_records_of(&case);
    assert!(
        all_in(&all_bytes_under(&sam.store), &sealed),
        "positive control: the case's sealed records are in Sam's files"
    );

    // The hub leaves the case: the next sync removes it from Sam's device, files included.
    let _server = server.offline(|data| {
        admin(
            data,
            &[
                "case",
                "remove-team",
                "--case",
                &case,
                "--team",
                "Hospital Discharge Hub",
            ],
        );
    });
    let report = sam.sync();
    assert!(
        report["evicted"].as_u64().unwrap() >= 3,
        "case, plan and note should be evicted: {report}"
    );
    assert!(!case_ids(&sam).contains(&case));
    assert!(
        !any_in(&all_bytes_under(&sam.store), &sealed),
        "a trace of the removed case (its sealed records) is left in Sam's store files"
    );
    assert!(!contains(&sam.decrypted_bytes(), marker));
    // Sam's own caseload is untouched, and the device still syncs.
    assert_eq!(priya.show(&case)["record"]["name"], "Marker Person");
    sam.sync();
}

#[test]
fn a_revoked_device_is_refused_and_wipes_its_store() {
    let (tmp, data, staff) = demo_borough();
    let issued: serde_json::Value = serde_json::from_str(&admin(
        &data,
        &["token", "issue", "--staff", "Priya Shah", "--json"],
    ))
    .unwrap();
    let server = Server::start(&data);
    let phone = device(&tmp, &server, &staff, "phone", "Priya Shah");
    let tablet = Cli::login(
        tmp.path().join("tablet"),
        &server,
        issued["token"].as_str().unwrap(),
    );
    let marker = "MARKER-on-a-tablet-that-gets-lost-91ab";
    let case = case_with_marker(&phone, marker);
    tablet.sync();
    assert!(
        contains(&tablet.decrypted_bytes(), marker),
        "positive control"
    );
    let sealed = tablet.sealed_records_of(&case);
    assert!(
        all_in(&all_bytes_under(&tablet.store), &sealed),
        "positive control"
    );

    let device = issued["device_id"].as_str().unwrap().to_string();
    let _server = server.offline(|data| {
        admin(data, &["token", "revoke", "--device", &device]);
    });
    let (code, err) = tablet.fails(&["sync"]);
    assert_eq!(code, 4, "a revoked device exits with code 4: {err}");
    assert!(
        err.contains("revoked") && err.contains("wiped"),
        "the message should say what happened: {err}"
    );
    assert!(
        !any_in(&all_bytes_under(&tablet.store), &sealed),
        "a revoked device kept a trace of its records"
    );
    assert!(!contains(&tablet.decrypted_bytes(), marker));
    assert!(case_ids(&tablet).is_empty());
    let (_, err) = tablet.fails(&["case", "new", "--name", "x"]);
    assert!(
        err.contains("not signed in"),
        "a wiped device is signed out: {err}"
    );
    // The phone, not revoked, goes on working.
    phone.sync();
    assert!(case_ids(&phone).contains(&case));
}

#[test]
fn a_change_pushed_under_another_staff_members_identity_is_refused_and_reaches_nobody() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya_token = token_of(&staff, "Priya Shah");
    let mark_token = token_of(&staff, "Mark Ellison");
    let priya = Cli::login(tmp.path().join("priya"), &server, &priya_token);
    let case = priya.ok(&["case", "new", "--name", "Forgery Target"]);
    priya.ok(&["plan", "append", &case, "--text", "Agreed plan."]);
    priya.sync();
    let priya_id: StaffId = priya.json(&["whoami", "--json"])["staff_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mark_id: StaffId = {
        let mark = Cli::login(tmp.path().join("mark"), &server, &mark_token);
        mark.json(&["whoami", "--json"])["staff_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };

    // Mark's device, bypassing client-core, fetches the plan and learns Priya's actor id.
    let (pulled, _, cursor) = raw::pull_all(&server.url, &mark_token, Seq(0));
    let plan = pulled
        .iter()
        .find(|p| p.kind == DocKind::Plan && p.case_id.to_string() == case)
        .expect("Mark can read the plan");
    let changes: Vec<automerge::Change> = plan
        .changes
        .iter()
        .map(|b| automerge::Change::from_bytes(b.to_vec()).unwrap())
        .collect();
    let priya_actor = changes
        .iter()
        .find(|c| c.author().map(|a| a.as_bytes().to_vec()) == Some(priya_id.as_bytes().to_vec()))
        .expect("a change by Priya")
        .actor_id()
        .clone();
    let mut doc = AutoCommit::new();
    doc.apply_changes(changes).unwrap();
    let base = doc.get_heads();

    let forge = |author: StaffId, actor: automerge::ActorId, text: &str| {
        let mut d = doc.clone();
        d.set_author(Some(Author::from(author.as_bytes().to_vec())));
        d.set_actor(actor);
        d.put(ROOT, "pathway", text).unwrap();
        DocPush {
            doc_id: plan.doc_id,
            case_id: plan.case_id,
            kind: DocKind::Plan,
            base: wire::to_wire_heads(&base),
            changes: d
                .get_changes(&base)
                .iter()
                .map(|c| ByteBuf::from(c.raw_bytes().to_vec()))
                .collect(),
        }
    };
    let attempts = [
        (
            "Priya's author and Priya's actor",
            forge(priya_id, priya_actor.clone(), "FORGED-1"),
        ),
        (
            "Mark's author on Priya's actor",
            forge(mark_id, priya_actor, "FORGED-2"),
        ),
        (
            "Priya's author on a fresh actor",
            forge(priya_id, automerge::ActorId::random(), "FORGED-3"),
        ),
    ];
    for (what, push) in attempts {
        let r = raw::sync(&server.url, &mark_token, cursor, vec![push]).unwrap();
        assert!(r.acks.is_empty(), "{what}: acknowledged");
        assert_eq!(r.rejections.len(), 1, "{what}: not refused");
        assert_eq!(r.rejections[0].code, ErrorCode::ForgedAuthor, "{what}");
    }
    // Mark's own, honest edit is accepted.
    let honest = forge(mark_id, automerge::ActorId::random(), "honest");
    let r = raw::sync(&server.url, &mark_token, cursor, vec![honest]).unwrap();
    assert_eq!(
        r.acks.len(),
        1,
        "an honest edit was refused: {:?}",
        r.rejections
    );

    // Nobody ever receives a forged change.
    priya.sync();
    // Ruth Adebayo, Priya's and Mark's team manager, on a fresh device.
    let fresh = device(&tmp, &server, &staff, "fresh", "Ruth Adebayo");
    fresh.sync();
    for dev in [&priya, &fresh] {
        let text = dev.show(&case).to_string();
        assert!(!text.contains("FORGED"), "a forged change reached a device");
        assert!(text.contains("honest"));
    }
}

#[test]
fn editing_one_audit_entry_on_disk_is_caught_by_audit_verify() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let dev = device(&tmp, &server, &staff, "dev", "Priya Shah");
    dev.ok(&["case", "new", "--name", "Audited Person"]);
    dev.sync();
    dev.sync();
    drop(server);

    let ok = server_cmd(&["audit", "verify", "--data", data.to_str().unwrap()]);
    assert!(ok.contains("intact"), "{ok}");
    let entries = audit_entries(&data);
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"enrol") && kinds.contains(&"sync"),
        "missing entries: {kinds:?}"
    );

    // Tamper with one entry in the middle, as someone with access to the files would.
    let target = entries[entries.len() / 2]["seq"].as_u64().unwrap();
    {
        let db = sled::open(&data).unwrap();
        let tree = db.open_tree("audit").unwrap();
        let key = target.to_be_bytes();
        let mut entry: serde_json::Value =
            serde_json::from_slice(&tree.get(key).unwrap().unwrap()).unwrap();
        entry["at_ms"] = serde_json::json!(entry["at_ms"].as_i64().unwrap() + 1);
        tree.insert(key, serde_json::to_vec(&entry).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let out = std::process::Command::new(SERVER_BIN)
        .args(["audit", "verify", "--data", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "audit verify passed a tampered log");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&target.to_string()),
        "audit verify did not name entry {target}: {said}"
    );
}
