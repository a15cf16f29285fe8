//! Record integrity end to end: a change crafted against a filed note is refused and quarantined
//! and reaches nobody; a device clock two hours fast is flagged and the server orders history by
//! the time it received changes; a person's whole record exports with every note, amendment and
//! original.

mod common;
use automerge::transaction::Transactable;
use automerge::{ActorId, Author, AutoCommit, ObjType, ReadDoc, ROOT};
use casenote_client_core::Device;
use casenote_protocol::wire::{self, DocPush};
use casenote_protocol::{DocId, ErrorCode, Seq, StaffId};
use common::*;
use serde_bytes::ByteBuf;
use serde_json::Value;
use std::sync::Arc;

#[test]
fn a_crafted_change_to_a_filed_note_is_refused_quarantined_and_reaches_nobody() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya_token = token_of(&staff, "Priya Shah");
    let priya = Cli::login(tmp.path().join("priya"), &server, &priya_token);
    let mark = device(&tmp, &server, &staff, "mark", "Mark Ellison");
    let case = priya.ok(&["case", "new", "--name", "Integrity Person"]);
    let note: DocId = priya
        .ok(&["note", "add", &case, "--text", "Seen at home."])
        .parse()
        .unwrap();
    priya.ok(&["note", "file", &note.to_string()]);
    priya.sync();
    mark.sync();
    let priya_id: StaffId = priya.json(&["whoami", "--json"])["staff_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Priya's own token, but the edit made with automerge directly, past client-core's checks.
    let (pulled, _, cursor) = raw::pull_all(&server.url, &priya_token, Seq(0));
    let pull = pulled.iter().find(|p| p.doc_id == note).unwrap();
    let mut doc = AutoCommit::new();
    doc.apply_changes(
        pull.changes
            .iter()
            .map(|b| automerge::Change::from_bytes(b.to_vec()).unwrap()),
    )
    .unwrap();
    let base = doc.get_heads();
    doc.set_author(Some(Author::from(priya_id.as_bytes().to_vec())));
    doc.set_actor(ActorId::random());
    let text = match doc.get(ROOT, "text").unwrap().unwrap() {
        (automerge::Value::Object(ObjType::Text), id) => id,
        other => panic!("no note text: {other:?}"),
    };
    doc.splice_text(&text, 0, 4, "NOT seen").unwrap();
    let crafted = doc.get_changes(&base);
    let hash = crafted[0].hash().to_string();
    let push = DocPush {
        doc_id: note,
        case_id: pull.case_id,
        kind: pull.kind,
        base: wire::to_wire_heads(&base),
        changes: crafted
            .iter()
            .map(|c| ByteBuf::from(c.raw_bytes().to_vec()))
            .collect(),
    };
    let r = raw::sync(&server.url, &priya_token, cursor, vec![push]).unwrap();
    assert!(r.acks.is_empty(), "the crafted change was acknowledged");
    assert_eq!(r.rejections.len(), 1);
    assert_eq!(r.rejections[0].code, ErrorCode::RuleViolation);
    assert!(
        r.rejections[0].reason.contains("filed"),
        "the reason should name the rule: {}",
        r.rejections[0].reason
    );

    mark.sync();
    let seen = mark.show(&case).to_string();
    assert!(
        !seen.contains("NOT seen") && seen.contains("Seen at home."),
        "the crafted change reached another device"
    );
    let (all, _, _) = raw::pull_all(&server.url, &token_of(&staff, "Mark Ellison"), Seq(0));
    assert!(all
        .iter()
        .flat_map(|p| &p.changes)
        .all(|b| automerge::Change::from_bytes(b.to_vec())
            .unwrap()
            .hash()
            .to_string()
            != hash));

    let _server = server.offline(|data| {
        let list: Value =
            serde_json::from_str(&admin(data, &["quarantine", "list", "--json"])).unwrap();
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["hash"] == hash.as_str())
            .expect("the change is in quarantine");
        assert!(
            entry["reason"].as_str().unwrap().contains("filed"),
            "{entry}"
        );
        assert_eq!(entry["doc_id"], note.to_string());
    });
}

#[test]
fn a_device_clock_two_hours_fast_is_flagged_and_history_follows_the_servers_clock() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let two_hours = 2 * 3_600_000;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let fast = Device::open_with_clock(
        &tmp.path().join("fast"),
        &common::store_key(),
        Arc::new(move || now() + two_hours),
    )
    .unwrap();
    fast.login(&server.url, &token_of(&staff, "Mark Ellison"))
        .unwrap();
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let case = priya.ok(&["case", "new", "--name", "Clock Person"]);
    priya.sync();

    fast.sync().unwrap();
    fast.plan_append(case.parse().unwrap(), " Written on the fast tablet.")
        .unwrap();
    let report = fast.sync().unwrap();
    assert!(
        report.clock_flagged,
        "a two-hour offset was not flagged: {report:?}"
    );
    assert!(report.clock_offset_ms > two_hours - 60_000);
    priya.sync();
    priya.ok(&[
        "plan",
        "append",
        &case,
        "--text",
        " Written later on a good clock.",
    ]);
    let ok = priya.sync();
    assert_eq!(ok["clock_flagged"], false);

    let plan_id = priya.show(&case)["plans"][0]["doc_id"]
        .as_str()
        .unwrap()
        .to_string();
    let history = priya.json(&["history", &plan_id, "--json"]);
    let entries = history.as_array().unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let received: Vec<i64> = entries
        .iter()
        .map(|e| e["received_at_ms"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]) && received.windows(2).all(|w| w[0] <= w[1]),
        "not in received order"
    );
    let last_two = &entries[entries.len() - 2..];
    assert_eq!(last_two[0]["staff_name"], "Mark Ellison");
    assert_eq!(last_two[1]["staff_name"], "Priya Shah");
    assert!(
        last_two[0]["device_time_ms"].as_i64().unwrap() > last_two[1]["device_time_ms"].as_i64().unwrap(),
        "the fast device's own clock puts its change after Priya's; the server's order must not follow it"
    );

    let _server = server.offline(|data| {
        let flagged = audit_entries(data)
            .iter()
            .filter(|e| e["kind"] == "sync" && e["details"]["clock_flagged"] == true)
            .count();
        assert!(
            flagged >= 1,
            "the audit log does not record the flagged clock"
        );
    });
}

#[test]
fn the_export_of_a_demo_person_holds_every_note_amendment_and_original() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let out = server_cmd_on(&["demo"], &data, &["--json"]);
    let demo_out: Value = serde_json::from_str(&out).unwrap();
    let peggy = demo_out["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "Peggy")
        .unwrap()["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    let sam_token = demo_out["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["staff"] == "Sam Kowalski")
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    // What Peggy's record holds, as a device on her case sees it.
    let server = Server::start(&data);
    let sam = Cli::login(tmp.path().join("sam"), &server, &sam_token);
    sam.sync();
    let shown = sam.show(&peggy);
    let note_ids: Vec<String> = shown["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["note_id"].as_str().unwrap().to_string())
        .collect();
    let amendments: Vec<(String, String)> = shown["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| {
            n["content"]["amends"]["note_id"]
                .as_str()
                .map(|o| (n["note_id"].as_str().unwrap().to_string(), o.to_string()))
        })
        .collect();
    assert!(
        !amendments.is_empty(),
        "the demo has an amended note on Peggy's record"
    );

    let exported = tmp.path().join("export");
    let _server = server.offline(|data| {
        server_cmd_on(
            &["export"],
            data,
            &["--case", &peggy, "--out", exported.to_str().unwrap()],
        );
        assert!(
            audit_entries(data).iter().any(|e| e["kind"] == "export"),
            "the export was not audited"
        );
    });
    let record: Value =
        serde_json::from_slice(&std::fs::read(exported.join("record.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(exported.join("record.html")).unwrap();
    let exported_notes: Vec<&Value> = record["notes"].as_array().unwrap().iter().collect();
    for id in &note_ids {
        assert!(
            exported_notes.iter().any(|n| n["note_id"] == id.as_str()),
            "note {id} is missing from the export"
        );
        assert!(
            html.contains(id.as_str()),
            "note {id} is missing from the HTML page"
        );
    }
    for (amendment, original) in &amendments {
        let orig = exported_notes
            .iter()
            .find(|n| n["note_id"] == original.as_str())
            .expect("the original is exported");
        assert!(
            orig["amended_by"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["note_id"] == amendment.as_str()),
            "the original does not show its amendment"
        );
        let amend = exported_notes
            .iter()
            .find(|n| n["note_id"] == amendment.as_str())
            .expect("the amendment is exported");
        assert_eq!(amend["amends"]["note_id"], original.as_str());
        assert!(
            amend["author"]["staff_id"].is_string()
                && amend["recorded_at_ms"].is_i64()
                && amend["first_received_at_ms"].is_i64()
        );
    }
}
