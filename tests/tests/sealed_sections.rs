//! Sealed sections and break-glass (issue 16), end to end through real server and CLI processes.
//!
//! Priya (Locality Team North) opens a case, which Owen's team (Community Nursing) joins; Lena
//! (Children's Early Help) is not on it. Priya writes a sealed restricted section and a hidden
//! one, both readable by her team only. Owen is told the sealed one exists and whom to ask, and
//! not a byte of its content reaches his device; of the hidden one he learns nothing. Owen breaks
//! the glass: the grant is audited (the reason by its hash), the IG lead reads the reason and
//! marks it reviewed, over the admin API and on the stopped store; when the grant has run out
//! (the server restarted with its clock 5 hours on, by libfaketime) Owen's device evicts the
//! section at its next sync and shows its stub again. The reason's text is never in the server's
//! log or its audit chain.

mod common;

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;

const SECRET_TEXT: &str = "Strategy-discussion-held-ZQX-0417: police involved, do not disclose";
const SECRET_TITLE: &str = "Section-47-strategy-ZQX";
const HIDDEN_TEXT: &str = "Hidden-matter-WVK-9921 between the team and the police";
const REASON: &str =
    "Patient-collapsed-RSN-5532 at home, need the safeguarding plan before entering";

/// The id of the team `name`, from `admin list` over the admin API of `w`'s server.
fn team_id(w: &World, name: &str) -> String {
    let list = admin_api_ok(&w.server, &w.admin_token, &["list", "--json"]);
    let list: Value = serde_json::from_str(&list).unwrap();
    list["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no team {name}: {list}"))["team_id"]
        .as_str()
        .unwrap()
        .to_string()
}

struct World {
    tmp: tempfile::TempDir,
    server: Server,
    admin_token: String,
    staff: Vec<Staff>,
    case: String,
    priya: Cli,
    owen: Cli,
    lena: Cli,
    mark: Cli,
    sealed: String,
    hidden: String,
}

/// The case with its sealed and hidden sections, synced by everyone.
fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let (staff, admin_token) = demo_with_admin(&data);
    let server = Server::start_faked(&data, "127.0.0.1:0", "+0s", &tmp.path().join("log-1"));
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    let owen = device(&tmp, &server, &staff, "owen", "Owen Hughes");
    let lena = device(&tmp, &server, &staff, "lena", "Lena Fischer");
    let mark = device(&tmp, &server, &staff, "mark", "Mark Ellison");
    let case = priya.ok(&["case", "new", "--name", "Edith Sealed"]);
    priya.sync();
    let server = server_offline_faked(server, &tmp.path().join("log-2"), "+0s", |data| {
        admin(
            data,
            &[
                "case",
                "add-team",
                "--case",
                &case,
                "--team",
                "Community Nursing",
            ],
        );
    });
    let sealed = priya.ok(&[
        "restricted",
        "new",
        &case,
        "--title",
        SECRET_TITLE,
        "--text",
        SECRET_TEXT,
        "--team",
        "Locality Team North",
        "--sealed",
    ]);
    let hidden = priya.ok(&[
        "restricted",
        "new",
        &case,
        "--title",
        "Hidden",
        "--text",
        HIDDEN_TEXT,
        "--team",
        "Locality Team North",
    ]);
    let report = priya.sync();
    assert_eq!(report["rejections"], serde_json::json!([]), "{report}");
    for dev in [&owen, &lena, &mark] {
        dev.sync();
    }
    World {
        tmp,
        server,
        admin_token,
        staff,
        case,
        priya,
        owen,
        lena,
        mark,
        sealed,
        hidden,
    }
}

/// Stops `server`, runs `work` on its store, and starts it again on the same port with its clock
/// at `offset`, logging to `log`.
fn server_offline_faked(
    server: Server,
    log: &Path,
    offset: &str,
    work: impl FnOnce(&Path),
) -> Server {
    let (data, addr) = (server.data.clone(), server.addr());
    drop(server);
    work(&data);
    Server::start_faked(&data, &addr, offset, log)
}

fn stubs(show: &Value) -> Vec<Value> {
    show["sealed"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_sealed_section_is_a_stub_to_staff_on_the_case_and_none_of_its_content_reaches_them() {
    let w = world();
    // Priya's team reads both sections.
    let mark_show = w.mark.show(&w.case);
    assert_eq!(
        mark_show["restricted"].as_array().unwrap().len(),
        2,
        "{mark_show}"
    );
    assert!(stubs(&mark_show).is_empty());

    // Owen is told of the sealed one, with whom to ask, and of nothing else.
    let owen_show = w.owen.show(&w.case);
    assert_eq!(owen_show["restricted"], serde_json::json!([]));
    let stubs = stubs(&owen_show);
    assert_eq!(stubs.len(), 1, "{owen_show}");
    assert_eq!(stubs[0]["doc_id"], w.sealed.as_str());
    assert_eq!(stubs[0]["kind"], "restricted");
    assert_eq!(stubs[0]["ask"]["name"], "Priya Shah");
    assert_eq!(stubs[0]["ask"]["team"], "Locality Team North");
    let page = w.owen.ok(&["show", &w.case]);
    assert!(
        page.contains("Sealed section: restricted, created ")
            && page.contains("ask Priya Shah (")
            && page.contains("Locality Team North"),
        "{page}"
    );

    // Not one byte of either section's content is on Owen's device; the hidden one's id is not
    // either. Lena, off the case, has neither the stub nor the case.
    let owen_bytes = w.owen.decrypted_bytes();
    for text in [SECRET_TEXT, SECRET_TITLE, HIDDEN_TEXT, w.hidden.as_str()] {
        assert!(
            !contains(&owen_bytes, text),
            "{text:?} reached Owen's device"
        );
    }
    assert!(!any_in(
        &all_bytes_under(&w.owen.store),
        &w.priya.sealed_records_of(&w.sealed)
    ));
    let lena_bytes = w.lena.decrypted_bytes();
    for text in [
        SECRET_TEXT,
        HIDDEN_TEXT,
        w.sealed.as_str(),
        w.hidden.as_str(),
        w.case.as_str(),
    ] {
        assert!(
            !contains(&lena_bytes, text),
            "{text:?} reached Lena's device"
        );
    }
    assert!(contains(&w.mark.decrypted_bytes(), SECRET_TEXT));

    // A new device of Owen's, syncing from nothing, is told of it too.
    let phone = device(&w.tmp, &w.server, &w.staff, "owen-phone", "Owen Hughes");
    phone.sync();
    assert_eq!(self::stubs(&phone.show(&w.case)).len(), 1);
    assert!(!contains(&phone.decrypted_bytes(), SECRET_TEXT));
}

#[test]
fn a_device_names_the_access_list_and_a_list_that_cannot_hold_is_refused_with_the_reason() {
    let w = world();
    let ward7 = team_id(&w, "Ward 7");
    // The device refuses a list without one of the creator's teams before anything is stored.
    let (_, err) = w.priya.fails(&[
        "restricted",
        "new",
        &w.case,
        "--title",
        "T",
        "--team",
        &ward7,
    ]);
    assert!(err.contains("must keep one of your own teams"), "{err}");
    let (_, err) = w.priya.fails(&[
        "restricted",
        "new",
        &w.case,
        "--title",
        "T",
        "--team",
        "No Such Team",
    ]);
    assert!(
        err.contains("neither a team id nor the name of one of your teams"),
        "{err}"
    );

    // The server refuses a team that is not on the case, and one that does not exist.
    let own = team_id(&w, "Locality Team North");
    let off_case = w.priya.ok(&[
        "restricted",
        "new",
        &w.case,
        "--title",
        "T",
        "--team",
        &own,
        "--team",
        &ward7,
    ]);
    let unknown = uuid::Uuid::new_v4().to_string();
    let no_team = w.priya.ok(&[
        "restricted",
        "new",
        &w.case,
        "--title",
        "T",
        "--team",
        &own,
        "--team",
        &unknown,
    ]);
    let report = w.priya.sync();
    let rejections = report["rejections"].as_array().unwrap();
    let reason = |doc: &str| {
        rejections
            .iter()
            .find(|r| r["doc_id"] == doc)
            .unwrap_or_else(|| panic!("{doc} not refused: {report}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(reason(&off_case).contains("not on case"), "{report}");
    assert!(reason(&no_team).contains("does not exist"), "{report}");
    let status = w.priya.ok(&["status"]);
    assert!(status.contains(&off_case), "{status}");

    // A sealed safeguarding enquiry with its list: Owen is told of it as a safeguarding section.
    let enquiry = w.priya.ok(&[
        "safeguarding",
        "new",
        &w.case,
        "--concern",
        "Concern-XJ-771",
        "--team",
        "Locality Team North",
        "--sealed",
    ]);
    w.priya.sync();
    w.owen.sync();
    let stubs = stubs(&w.owen.show(&w.case));
    let stub = stubs
        .iter()
        .find(|s| s["doc_id"] == enquiry.as_str())
        .unwrap_or_else(|| panic!("no stub of the enquiry: {stubs:?}"));
    assert_eq!(stub["kind"], "safeguarding");
    assert!(!contains(&w.owen.decrypted_bytes(), "Concern-XJ-771"));
    assert!(
        contains(&w.mark.decrypted_bytes(), "Concern-XJ-771") || {
            w.mark.sync();
            contains(&w.mark.decrypted_bytes(), "Concern-XJ-771")
        }
    );
}

#[test]
fn break_glass_grants_audits_and_notifies_the_ig_lead_and_the_access_ends() {
    let w = world();
    let out = w.owen.ok(&[
        "break-glass",
        "--doc",
        &w.sealed,
        "--reason-category",
        "urgent_care",
        "--reason",
        REASON,
    ]);
    assert!(out.contains("granted"), "{out}");
    w.owen.sync();
    let show = w.owen.show(&w.case);
    assert_eq!(show["restricted"].as_array().unwrap().len(), 1, "{show}");
    assert!(
        stubs(&show).is_empty(),
        "the stub goes once the section is here: {show}"
    );
    assert!(contains(&w.owen.decrypted_bytes(), SECRET_TEXT));
    assert!(!contains(&w.owen.decrypted_bytes(), HIDDEN_TEXT));

    // The IG lead reads it, reason and all, over the admin API, and marks it reviewed.
    let listed: Value = serde_json::from_str(&admin_api_ok(
        &w.server,
        &w.admin_token,
        &["break-glass", "list", "--json"],
    ))
    .unwrap();
    let records = listed.as_array().unwrap();
    assert_eq!(records.len(), 1, "{listed}");
    let record = &records[0];
    assert_eq!(record["doc_id"], w.sealed.as_str());
    assert_eq!(record["category"], "urgent_care");
    assert_eq!(record["reason"], REASON);
    assert_eq!(record["reviewed"], Value::Null);
    let id = record["id"].as_str().unwrap().to_string();
    let text = admin_api_ok(&w.server, &w.admin_token, &["break-glass", "list"]);
    assert!(
        text.contains("NOT REVIEWED") && text.contains(REASON),
        "{text}"
    );
    // A backup taken now carries the grant and its record (restored below).
    let backup = w.tmp.path().join("with-grant.backup");
    admin_api_ok(
        &w.server,
        &w.admin_token,
        &["backup", "--out", backup.to_str().unwrap()],
    );
    let reviewed = admin_api_ok(
        &w.server,
        &w.admin_token,
        &["break-glass", "review", "--id", &id],
    );
    assert!(reviewed.contains("reviewed"), "{reviewed}");

    // Four hours on (the server's clock moved by libfaketime), the grant has ended: Owen's next
    // sync evicts the section and he is told of it again.
    let server = server_offline_faked(w.server, &w.tmp.path().join("log-3"), "+5h", |_| {});
    w.owen.sync();
    let show = w.owen.show(&w.case);
    assert_eq!(show["restricted"], serde_json::json!([]), "{show}");
    assert_eq!(stubs(&show).len(), 1, "{show}");
    assert!(!contains(&w.owen.decrypted_bytes(), SECRET_TEXT));
    assert!(!contains(&all_bytes_under(&w.owen.store), SECRET_TEXT));
    // Priya's team still reads it.
    w.mark.sync();
    assert!(contains(&w.mark.decrypted_bytes(), SECRET_TEXT));

    // On the stopped store: lapsed and reviewed, so it has left the list; the audit chain keeps
    // the grant, the lapse and the review, with the reason's hash and never its text.
    let data = server.data.clone();
    drop(server);
    let listed = admin(&data, &["break-glass", "list", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&listed).unwrap(),
        serde_json::json!([])
    );
    let entries = audit_entries(&data);
    let glass: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "break_glass")
        .collect();
    let events: Vec<&str> = glass
        .iter()
        .map(|e| e["details"]["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["granted", "reviewed", "lapsed"]);
    let hash: String = Sha256::digest(REASON.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for e in &glass {
        assert_eq!(e["details"]["reason_sha256"], hash.as_str());
        assert_eq!(e["details"]["doc_id"], w.sealed.as_str());
    }
    let all_audit = serde_json::to_string(&entries).unwrap();
    assert!(
        !all_audit.contains("RSN-5532"),
        "the reason's text is in the audit chain"
    );
    for log in ["log-1", "log-2", "log-3"] {
        let text = std::fs::read_to_string(w.tmp.path().join(log)).unwrap_or_default();
        assert!(
            !text.contains("RSN-5532"),
            "the reason's text is in the server's {log}"
        );
    }
    // The backup restored into a new store: the record is there, unreviewed, with its reason.
    let restored = w.tmp.path().join("restored");
    let mut args = vec!["restore".to_string(), "--from".into()];
    args.push(backup.to_string_lossy().into_owned());
    args.extend(store_args(&restored));
    server_cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let listed: Value =
        serde_json::from_str(&admin(&restored, &["break-glass", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed[0]["reason"], REASON);
    assert_eq!(listed[0]["reviewed"], Value::Null);

    let logged = std::fs::read_to_string(w.tmp.path().join("log-2")).unwrap();
    assert!(
        logged.contains("break-glass granted"),
        "the grant is logged by its ids"
    );
}

#[test]
fn break_glass_is_refused_offline_on_a_hidden_section_off_the_case_and_to_its_own_team() {
    let w = world();
    let ask = |dev: &Cli, doc: &str| {
        dev.fails(&[
            "break-glass",
            "--doc",
            doc,
            "--reason-category",
            "risk_to_life",
            "--reason",
            REASON,
        ])
        .1
    };
    let err = ask(&w.owen, &w.hidden);
    assert!(err.contains("not a sealed section"), "{err}");
    let err = ask(&w.lena, &w.sealed);
    assert!(err.contains("not a sealed section"), "{err}");
    let err = ask(&w.owen, &uuid::Uuid::new_v4().to_string());
    assert!(err.contains("not a sealed section"), "{err}");
    let err = ask(&w.mark, &w.sealed);
    assert!(err.contains("may already read"), "{err}");
    let (_, err) = w.owen.fails(&[
        "break-glass",
        "--doc",
        &w.sealed,
        "--reason-category",
        "boredom",
        "--reason",
        REASON,
    ]);
    assert!(err.contains("not a reason category"), "{err}");
    let (_, err) = w.owen.fails(&[
        "break-glass",
        "--doc",
        &w.sealed,
        "--reason-category",
        "risk_to_life",
        "--reason",
        "  ",
    ]);
    assert!(err.contains("why it cannot wait"), "{err}");
    let long = "x".repeat(casenote_protocol::limits::BREAK_GLASS_REASON_BYTES_MAX + 1);
    let (_, err) = w.owen.fails(&[
        "break-glass",
        "--doc",
        &w.sealed,
        "--reason-category",
        "risk_to_life",
        "--reason",
        &long,
    ]);
    assert!(err.contains("the limit is"), "{err}");

    // Offline: refused, with what to do instead, and nothing queued for later.
    let data = w.server.data.clone();
    drop(w.server);
    let err = ask(&w.owen, &w.sealed);
    assert!(err.contains("only online"), "{err}");
    let listed = admin(&data, &["break-glass", "list", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&listed).unwrap(),
        serde_json::json!([])
    );
    let _ = &w.priya;
}
