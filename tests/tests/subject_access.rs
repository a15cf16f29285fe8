//! Subject access requests through real processes (issue 16): an administrator opens a request
//! for a person over the admin API of a running server, lists the open ones with their due dates
//! (one calendar month after receipt, overdue ones flagged), and fulfils one, which writes the
//! person's whole record and closes the request; each step is audited. The record reads as a
//! person and a court need it: UK times, staff by name, role and organisation, the plan and the
//! statutory documents laid out, amendments beside their originals, third-party data flagged,
//! a print stylesheet, and per change PRSB provenance items and FHIR R4 `Provenance` resources.

mod common;
use common::*;
use serde_json::Value;

fn field<'a>(v: &'a Value, list: &str, key: &str, want: &str) -> &'a Value {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x[key] == want)
        .unwrap_or_else(|| panic!("no {want} in {list}"))
}

fn open_list(server: &Server, admin: &str) -> Vec<Value> {
    let out = admin_api_ok(server, admin, &["sar", "list", "--json"]);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_request_is_opened_listed_with_its_due_date_fulfilled_and_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let demo: Value = serde_json::from_str(&server_cmd_on(&["demo"], &data, &["--json"])).unwrap();
    let admin = demo["admin_token"].as_str().unwrap().to_string();
    let peggy = field(&demo, "cases", "label", "Peggy")["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    let jean = field(&demo, "cases", "label", "Jean")["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    let sam_token = field(&demo, "tokens", "staff", "Sam Kowalski")["token"]
        .as_str()
        .unwrap();

    let server = Server::start(&data);
    let sam = Cli::login(tmp.path().join("sam"), &server, sam_token);
    sam.sync();
    sam.ok(&["alert", "add", &peggy, "--text", "Dog in the house"]);
    sam.sync();

    let opened = admin_api_ok(&server, &admin, &["sar", "open", "--case", &peggy]);
    assert!(opened.contains("due "), "{opened}");
    // A request received long ago, by post say: overdue.
    admin_api_ok(
        &server,
        &admin,
        &["sar", "open", "--case", &jean, "--received", "2020-01-31"],
    );
    let (code, err) = {
        let out = admin_over_api(
            &server,
            &admin,
            &["sar", "open", "--case", &jean, "--received", "2099-01-01"],
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert_eq!(code, Some(1), "a request received in the future: {err}");
    assert!(err.contains("YYYY-MM-DD"), "{err}");

    let open = open_list(&server, &admin);
    assert_eq!(open.len(), 2, "{open:?}");
    let late = open.iter().find(|r| r["case_id"] == jean.as_str()).unwrap();
    assert_eq!(late["received"], "2020-01-31");
    assert_eq!(
        late["due"], "2020-02-29",
        "one month after the 31st is the month's last day"
    );
    assert_eq!(late["overdue"], true);
    assert!(late["days_left"].as_i64().unwrap() < 0);
    let fresh = open
        .iter()
        .find(|r| r["case_id"] == peggy.as_str())
        .unwrap();
    assert_eq!(fresh["overdue"], false);
    let left = fresh["days_left"].as_i64().unwrap();
    assert!(
        (28..=31).contains(&left),
        "a month from today is {left} days"
    );
    assert_eq!(
        open[0]["case_id"],
        jean.as_str(),
        "the soonest due comes first"
    );
    let text = admin_api_ok(&server, &admin, &["sar", "list"]);
    assert!(text.contains("OVERDUE"), "{text}");

    let request = fresh["request_id"].as_str().unwrap().to_string();
    let out = tmp.path().join("sar");
    let done = admin_api_ok(
        &server,
        &admin,
        &[
            "sar",
            "fulfil",
            "--request",
            &request,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(done.contains("fulfilled"), "{done}");
    assert!(out.join("record.json").exists() && out.join("record.html").exists());
    let open = open_list(&server, &admin);
    assert_eq!(open.len(), 1, "the fulfilled request is closed: {open:?}");
    let again = admin_over_api(
        &server,
        &admin,
        &[
            "sar",
            "fulfil",
            "--request",
            &request,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        !again.status.success(),
        "a closed request cannot be fulfilled twice"
    );

    let _server = server.offline(|data| {
        let audit = audit_entries(data);
        let sar: Vec<&Value> = audit
            .iter()
            .filter(|e| e["kind"] == "subject_access")
            .collect();
        let what: Vec<&str> = sar
            .iter()
            .map(|e| e["details"]["what"].as_str().unwrap())
            .collect();
        assert_eq!(what, ["opened", "opened", "fulfilled"], "{sar:?}");
        for e in &sar {
            assert_eq!(e["details"]["by"]["via"], "admin", "{e}");
        }
        assert!(
            audit
                .iter()
                .any(|e| e["kind"] == "export" && e["details"]["case_id"] == peggy.as_str()),
            "the record's export was not audited"
        );
    });
}

#[test]
fn the_record_reads_in_uk_time_with_staff_named_kinds_laid_out_and_provenance_per_change() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let demo: Value = serde_json::from_str(&server_cmd_on(&["demo"], &data, &["--json"])).unwrap();
    let admin = demo["admin_token"].as_str().unwrap().to_string();
    let peggy = field(&demo, "cases", "label", "Peggy")["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    let sam_token = field(&demo, "tokens", "staff", "Sam Kowalski")["token"]
        .as_str()
        .unwrap();
    let server = Server::start(&data);
    let sam = Cli::login(tmp.path().join("sam"), &server, sam_token);
    sam.sync();
    sam.ok(&["alert", "add", &peggy, "--text", "Key safe code changed"]);
    sam.ok(&[
        "plan",
        "append",
        &peggy,
        "--text",
        "Daily call at 10.\nFamily visit Sundays.",
    ]);
    sam.sync();

    let opened = admin_api_ok(&server, &admin, &["sar", "open", "--case", &peggy]);
    let request = opened.split_whitespace().nth(4).unwrap().to_string();
    let out = tmp.path().join("sar");
    admin_api_ok(
        &server,
        &admin,
        &[
            "sar",
            "fulfil",
            "--request",
            &request,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let record: Value =
        serde_json::from_slice(&std::fs::read(out.join("record.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(out.join("record.html")).unwrap();

    // Times in UK local time, named as GMT or BST; no time as milliseconds since 1970.
    assert!(
        html.contains(" GMT") || html.contains(" BST"),
        "no UK times"
    );
    let exported_ms = record["exported_at_ms"].as_i64().unwrap().to_string();
    assert!(
        !html.contains(&exported_ms),
        "a raw millisecond time is on the page"
    );
    for n in record["notes"].as_array().unwrap() {
        let recorded = n["recorded_at_ms"].as_i64().unwrap().to_string();
        assert!(!html.contains(&recorded), "note times are raw on the page");
    }
    // Staff by name, role and organisation; not by uuid alone.
    assert!(
        html.contains("Sam Kowalski (social worker, Castlebridge Council)"),
        "staff are not named with role and organisation"
    );
    let sam_id = raw::staff_id(&server.url, sam_token).to_string();
    assert_eq!(record["people"][&sam_id]["name"], "Sam Kowalski");
    // The plan laid out, not dumped as JSON; the alert with who raised it.
    assert!(
        !html.contains("\"narrative\""),
        "the plan is a raw JSON dump"
    );
    assert!(
        html.contains("Family visit Sundays."),
        "the plan's narrative is missing"
    );
    assert!(html.contains("<h2 id=\"plan\">Plan</h2>"));
    let alert_row = html
        .split("<tr>")
        .find(|r| r.contains("Key safe code changed"))
        .expect("the alert is on the page");
    assert!(
        alert_row.contains("Sam Kowalski")
            && (alert_row.contains("GMT") || alert_row.contains("BST")),
        "{alert_row}"
    );
    // Every amendment beside the original it amends.
    let amendment = record["notes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["amends"]["note_id"].is_string())
        .expect("the demo amends a note of Peggy's");
    let original_text = amendment["original"]["text"]
        .as_str()
        .expect("the original's text");
    assert!(html.contains("The original note, as filed"));
    assert!(html.contains(&original_text[..20.min(original_text.len())]));
    // A print stylesheet.
    assert!(html.contains("@media print"), "no print stylesheet");

    // Provenance per change: PRSB items per document, FHIR R4 Provenance resources overall.
    let changes: usize = record["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["history"].as_array().unwrap().len())
        .sum();
    let fhir = record["fhir_provenance"].as_array().unwrap();
    assert_eq!(fhir.len(), changes, "one Provenance resource per change");
    for p in fhir {
        assert_eq!(p["resourceType"], "Provenance");
        assert!(p["target"][0]["reference"]
            .as_str()
            .unwrap()
            .starts_with("DocumentReference/"));
        assert!(p["recorded"].as_str().unwrap().ends_with('Z'), "{p}");
        assert!(!p["agent"].as_array().unwrap().is_empty());
        assert!(p["agent"][0]["who"]["reference"]
            .as_str()
            .unwrap()
            .starts_with("Practitioner/"));
    }
    assert!(fhir
        .iter()
        .any(|p| p["agent"][0]["who"]["display"] == "Sam Kowalski"));
    for d in record["documents"].as_array().unwrap() {
        let prov = d["provenance"].as_array().unwrap();
        assert_eq!(prov.len(), d["history"].as_array().unwrap().len());
        for p in prov {
            let who = &p["person_completing_record"];
            assert!(
                who["name"].is_string()
                    && who["role"].is_string()
                    && who["organisation"].is_string(),
                "{p}"
            );
            assert!(
                p["date_completed"]
                    .as_str()
                    .is_some_and(|s| s.ends_with("GMT") || s.ends_with("BST")),
                "{p}"
            );
        }
    }
}
