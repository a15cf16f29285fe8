//! The statutory record (issue 15): assessments, discharge, referral, safeguarding, legal status
//! and contacts round-trip through the CLI, sync and a fresh device; a completed assessment never
//! changes; concurrent discharge dates show as a conflict on both devices; the CLI refuses
//! invalid identifiers, dates and vocabulary values, and the server refuses (and quarantines)
//! each of them when crafted past the CLI with automerge directly.

mod common;
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ROOT};
use casenote_protocol::wire::{self, DocPull};
use casenote_protocol::{DocId, DocKind, ErrorCode, Seq, StaffId};
use common::craft::{craft, load, push_of};
use common::*;
use serde_json::Value;

fn staff_id(cli: &Cli) -> StaffId {
    cli.json(&["whoami", "--json"])["staff_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The one document of `kind` in a `show --json` list, by id.
fn doc<'a>(show: &'a Value, list: &str, id: &str) -> &'a Value {
    show[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {show}"))
        .iter()
        .find(|d| d["doc_id"] == id)
        .unwrap_or_else(|| panic!("{id} is not in {list}: {show}"))
}

/// A capacity assessment that finds the person lacks capacity, filled in through the CLI; returns
/// its id.
fn jean_lacks_capacity(cli: &Cli, case: &str) -> String {
    let id = cli.ok(&["assessment", "new", case, "--type", "mca"]);
    let set = |field: &str, value: &str| {
        cli.ok(&["assessment", "set", &id, "--field", field, "--value", value]);
    };
    set("decision", "Whether to stay in respite care for two weeks");
    set(
        "help_given",
        "Pictures of the home; a quiet room; her son present",
    );
    set("stage1.impairment", "yes");
    set("stage1.evidence", "Diagnosis of Alzheimer's disease");
    for (test, result) in [
        ("understand", "cannot"),
        ("retain", "cannot"),
        ("use-or-weigh", "cannot"),
        ("communicate", "can"),
    ] {
        cli.ok(&[
            "assessment",
            "test",
            &id,
            test,
            "--result",
            result,
            "--evidence",
            "Observed over two visits",
        ]);
    }
    set("outcome", "lacks_capacity");
    id
}

#[test]
fn a_capacity_assessment_round_trips_and_once_completed_never_changes() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let case = a.ok(&["case", "new", "--name", "Test Jean"]);
    let id = jean_lacks_capacity(&a, &case);

    // Lacking capacity needs a complete best-interests decision with someone consulted.
    let (code, err) = a.fails(&["assessment", "complete", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("best-interests"), "{err}");
    for (field, value) in [
        ("best_interests.wishes_and_beliefs", "Wants to be near Tom"),
        (
            "best_interests.least_restrictive_option",
            "Respite close to home",
        ),
        (
            "best_interests.rationale",
            "Tom needs rest; Jean is safe there",
        ),
        ("best_interests.decision", "Two weeks' respite at Elm House"),
    ] {
        a.ok(&["assessment", "set", &id, "--field", field, "--value", value]);
    }
    let (_, err) = a.fails(&["assessment", "complete", &id]);
    assert!(err.contains("consulted"), "{err}");
    a.ok(&[
        "assessment",
        "consult",
        &id,
        "--name",
        "Tom",
        "--relationship",
        "husband",
        "--view",
        "Agrees",
    ]);
    a.ok(&["assessment", "complete", &id]);
    a.sync();

    // A fresh device sees it whole, completed by Priya.
    let fresh = device(&tmp, &server, &staff, "fresh", "Priya Shah");
    fresh.sync();
    let show = fresh.show(&case);
    let c = &doc(&show, "assessments", &id)["content"];
    assert_eq!(c["type"], "mca");
    assert_eq!(c["status"], "completed");
    assert_eq!(c["outcome"], "lacks_capacity");
    assert_eq!(c["tests"]["use_or_weigh"]["result"], "cannot");
    assert_eq!(c["completed_by"], staff_id(&a).to_string());
    let consulted: Vec<&Value> = c["best_interests"]["consulted"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert_eq!(consulted.len(), 1);
    assert_eq!(consulted[0]["name"], "Tom");
    let page = fresh.ok(&["show", &case]);
    assert!(page.contains("Assessment: mca (completed"), "{page}");
    assert!(page.contains("outcome: lacks_capacity"), "{page}");

    // Completed: the device refuses every edit, and says what to do instead.
    let (code, err) = fresh.fails(&[
        "assessment",
        "set",
        &id,
        "--field",
        "outcome",
        "--value",
        "has_capacity",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is completed") && err.contains("assessment amend"),
        "{err}"
    );

    // Past the device, the server refuses it on its header alone, and quarantines it.
    let token = token_of(&staff, "Priya Shah");
    let (pulled, _, cursor) = raw::pull_all(&server.url, &token, Seq(0));
    let pull = pulled.iter().find(|p| p.doc_id.to_string() == id).unwrap();
    let rej = push_crafted(&server, &token, cursor, pull, staff_id(&a), |d| {
        d.put(ROOT, "outcome", "has_capacity").unwrap();
    })
    .expect_err("a change to a completed assessment was accepted");
    assert_eq!(rej.code, ErrorCode::RuleViolation);
    assert!(rej.reason.contains("completed"), "{}", rej.reason);

    // A correction is a new assessment that amends it, with a reason.
    let amendment = fresh.ok(&[
        "assessment",
        "amend",
        &id,
        "--correction",
        "--reason",
        "Tom's view was recorded wrongly",
    ]);
    fresh.sync();
    a.sync();
    let show = a.show(&case);
    assert_eq!(
        doc(&show, "assessments", &id)["amended_by"],
        serde_json::json!([amendment])
    );
    let am = &doc(&show, "assessments", &amendment)["content"];
    assert_eq!(am["amends"]["assessment_id"], id.as_str());
    assert_eq!(am["amends"]["kind"], "correction");
    assert_eq!(am["status"], "in_progress");
    assert_eq!(am["type"], "mca");

    drop(server);
    let list: Value =
        serde_json::from_str(&admin(&data, &["quarantine", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

/// Pushes the change `edit` makes to the pulled document, as `staff`; the server's answer.
fn push_crafted(
    server: &Server,
    token: &str,
    cursor: Seq,
    pull: &DocPull,
    staff: StaffId,
    edit: impl FnOnce(&mut AutoCommit),
) -> Result<wire::DocAck, wire::Rejection> {
    let mut am = load(pull);
    let base = am.get_heads();
    let changes = craft(&mut am, staff, edit);
    let push = push_of(pull.doc_id, pull.case_id, pull.kind, &base, &changes);
    let r = raw::sync(&server.url, token, cursor, vec![push])
        .unwrap_or_else(|(code, body)| panic!("HTTP {code}: {body:?}"));
    match r.rejections.into_iter().next() {
        Some(rej) => Err(rej),
        None => Ok(r.acks.into_iter().next().expect("an ack")),
    }
}

fn map_at(d: &AutoCommit, path: &[&str]) -> ObjId {
    let mut obj = ROOT;
    for key in path {
        obj = match d.get(&obj, *key).unwrap() {
            Some((automerge::Value::Object(ObjType::Map), id)) => id,
            other => panic!("no map at {key}: {other:?}"),
        };
    }
    obj
}

type Edit = Box<dyn Fn(&mut AutoCommit)>;

#[test]
fn each_rule_refuses_a_crafted_change_and_quarantines_it() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let case = a.ok(&["case", "new", "--name", "Crafted Person"]);
    let mca = jean_lacks_capacity(&a, &case);
    let needs = a.ok(&["assessment", "new", &case, "--type", "needs"]);
    let discharge = a.ok(&["discharge", "new", &case]);
    let equipment = a.ok(&["discharge", "equipment", &discharge, "--item", "Hoist"]);
    let referral = a.ok(&[
        "referral",
        "new",
        &case,
        "--source",
        "gp",
        "--urgency",
        "urgent",
        "--reason",
        "Falls",
    ]);
    let safeguarding = a.ok(&["safeguarding", "new", &case, "--concern", "Bruising"]);
    let legal = a.ok(&[
        "legal",
        "add",
        &case,
        "--kind",
        "dols",
        "--start",
        "2026-01-05",
    ]);
    let note = a.ok(&["note", "add", &case, "--text", "Seen at home."]);
    a.sync();
    let me = staff_id(&a);
    let someone_else = StaffId::new_random().to_string();
    let token = token_of(&staff, "Priya Shah");

    const CHOSEN: &str = "DEVICE-CHOSEN-TEXT-4c1e";
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            &mca,
            "an outcome outside the vocabulary",
            Box::new(|d| {
                d.put(ROOT, "outcome", CHOSEN).unwrap();
            }),
        ),
        (
            &mca,
            "a test result outside the vocabulary",
            Box::new(|d| {
                let t = map_at(d, &["tests", "retain"]);
                d.put(&t, "result", "maybe").unwrap();
            }),
        ),
        (
            &mca,
            "a field the schema does not have",
            Box::new(|d| {
                d.put(ROOT, CHOSEN, "x").unwrap();
            }),
        ),
        (
            &mca,
            "a changed type",
            Box::new(|d| {
                d.put(ROOT, "type", "needs").unwrap();
            }),
        ),
        (&mca, "completion without a best-interests decision", {
            let me = me.to_string();
            Box::new(move |d| {
                d.put(ROOT, "completed_by", me.as_str()).unwrap();
                d.put(ROOT, "completed_at_ms", 1_i64).unwrap();
                d.put(ROOT, "status", "completed").unwrap();
            })
        }),
        (&mca, "completion in someone else's name", {
            let other = someone_else.clone();
            Box::new(move |d| {
                d.put(ROOT, "completed_by", other.as_str()).unwrap();
            })
        }),
        (&needs, "eligibility against the regulations", {
            let me = me.to_string();
            Box::new(move |d| {
                let outcomes = map_at(d, &["outcomes"]);
                for o in casenote_protocol::record::vocab::NEEDS_OUTCOMES {
                    let m = map_at(d, &["outcomes", o]);
                    let _ = &outcomes;
                    d.put(&m, "unable_to_achieve", "no").unwrap();
                }
                d.put(ROOT, "needs_arise_from_impairment", "yes").unwrap();
                d.put(ROOT, "wellbeing_impact", "significant").unwrap();
                d.put(ROOT, "eligible", "yes").unwrap();
                d.put(ROOT, "completed_by", me.as_str()).unwrap();
                d.put(ROOT, "completed_at_ms", 1_i64).unwrap();
                d.put(ROOT, "status", "completed").unwrap();
            })
        }),
        (
            &discharge,
            "pathway 4",
            Box::new(|d| {
                d.put(ROOT, "pathway", "4").unwrap();
            }),
        ),
        (
            &discharge,
            "a date that is not in the calendar",
            Box::new(|d| {
                d.put(ROOT, "expected_discharge_date", "2026-02-30")
                    .unwrap();
            }),
        ),
        (&discharge, "an equipment status outside the vocabulary", {
            let e = equipment.clone();
            Box::new(move |d| {
                let m = map_at(d, &["equipment", &e]);
                d.put(&m, "status", CHOSEN).unwrap();
            })
        }),
        (
            &referral,
            "a source outside the vocabulary",
            Box::new(|d| {
                d.put(ROOT, "source", "friend").unwrap();
            }),
        ),
        (&referral, "a triage in someone else's name", {
            let other = someone_else.clone();
            Box::new(move |d| {
                d.put(ROOT, "triaged_by", other.as_str()).unwrap();
            })
        }),
        (
            &safeguarding,
            "a source of harm not marked third-party",
            Box::new(|d| {
                let m = map_at(d, &["alleged_source_of_harm"]);
                d.put(&m, "third_party", "no").unwrap();
            }),
        ),
        (
            &case,
            "an NHS number failing Modulus 11",
            Box::new(|d| {
                d.put(ROOT, "nhs_number", "943 476 5918").unwrap();
            }),
        ),
        (
            &case,
            "a date of birth in the future",
            Box::new(|d| {
                d.put(ROOT, "dob", "2999-01-01").unwrap();
            }),
        ),
        (
            &case,
            "a date of birth before 1900",
            Box::new(|d| {
                d.put(ROOT, "dob", "1899-12-31").unwrap();
            }),
        ),
        (&case, "a legal status kind outside the vocabulary", {
            let l = legal.clone();
            Box::new(move |d| {
                let m = map_at(d, &["legal_status", &l]);
                d.put(&m, "kind", "section_136").unwrap();
            })
        }),
        (
            &case,
            "a contact role outside the vocabulary",
            Box::new(|d| {
                let m = map_at(d, &["contacts"]);
                let e = d
                    .put_object(&m, "8c0e7d5a-0000-4000-8000-000000000001", ObjType::Map)
                    .unwrap();
                d.put(&e, "role", "friend").unwrap();
                d.put(&e, "name", "Anyone").unwrap();
            }),
        ),
        (
            &note,
            "an emptied note",
            Box::new(|d| {
                let t = match d.get(ROOT, "text").unwrap() {
                    Some((automerge::Value::Object(ObjType::Text), id)) => id,
                    other => panic!("no text: {other:?}"),
                };
                let len = d.length(&t);
                d.splice_text(&t, 0, len as isize, "   ").unwrap();
            }),
        ),
    ];
    let count = cases.len();
    for (id, what, edit) in cases {
        let (pulled, _, cursor) = raw::pull_all(&server.url, &token, Seq(0));
        let pull = pulled
            .iter()
            .find(|p| p.doc_id.to_string() == id)
            .unwrap_or_else(|| panic!("{id} was not pulled"));
        let rej = push_crafted(&server, &token, cursor, pull, me, |d| edit(d))
            .err()
            .unwrap_or_else(|| panic!("{what} was accepted"));
        assert_eq!(rej.code, ErrorCode::RuleViolation, "{what}: {rej:?}");
        assert!(
            !rej.reason.contains(CHOSEN) && !rej.reason.contains("maybe"),
            "{what}: the reason echoes the device: {}",
            rej.reason
        );
    }
    // A new assessment without its status (nor start) is refused too.
    let mut bare = AutoCommit::new();
    let changes = craft(&mut bare, me, |d| {
        d.put(ROOT, "schema", "casenote/assessment/1").unwrap();
        d.put(ROOT, "case_id", case.as_str()).unwrap();
        d.put(ROOT, "type", "mca").unwrap();
    });
    let push = push_of(
        DocId::new_random(),
        case.parse().unwrap(),
        DocKind::Assessment,
        &[],
        &changes,
    );
    let r = raw::sync(&server.url, &token, Seq(0), vec![push]).unwrap();
    assert_eq!(r.rejections.len(), 1, "a bare assessment was accepted");
    assert!(
        r.rejections[0].reason.contains("needs its status"),
        "{:?}",
        r.rejections
    );
    let count = count + 1;

    // Past all of that, an honest edit still goes through.
    a.ok(&[
        "discharge",
        "set",
        &discharge,
        "--field",
        "pathway",
        "--value",
        "1",
    ]);
    let report = a.sync();
    assert_eq!(
        report["rejections"].as_array().map_or(0, Vec::len),
        0,
        "{report}"
    );

    drop(server);
    let list: Value =
        serde_json::from_str(&admin(&data, &["quarantine", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), count, "{list}");
    assert!(!list.to_string().contains(CHOSEN));
}

#[test]
fn concurrent_discharge_dates_show_as_a_conflict_on_both_devices() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let b = device(&tmp, &server, &staff, "b", "Mark Ellison");
    let case = a.ok(&["case", "new", "--name", "Discharge Person"]);
    let id = a.ok(&["discharge", "new", &case]);
    a.ok(&[
        "discharge",
        "set",
        &id,
        "--field",
        "pathway",
        "--value",
        "1",
    ]);
    a.sync();
    b.sync();
    let set = |cli: &Cli, date: &str| {
        cli.ok(&[
            "discharge",
            "set",
            &id,
            "--field",
            "expected-discharge-date",
            "--value",
            date,
        ]);
    };
    set(&a, "2026-03-02");
    set(&b, "2026-03-04");
    a.sync();
    b.sync();
    a.sync();
    for cli in [&a, &b] {
        let show = cli.show(&case);
        let conflict = show["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == serde_json::json!(["expected_discharge_date"]))
            .unwrap_or_else(|| panic!("no conflict: {show}"));
        assert_eq!(conflict["doc_id"], id.as_str());
        let mut values: Vec<&str> = conflict["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        values.sort();
        assert_eq!(values, ["2026-03-02", "2026-03-04"]);
        let page = cli.ok(&["show", &case]);
        assert!(page.contains("expected discharge date: DISPUTED"), "{page}");
    }
    // A person settles it, and both devices see the one date.
    b.ok(&[
        "resolve",
        &case,
        "--field",
        "expected-discharge-date",
        "--value",
        "2026-03-04",
    ]);
    b.sync();
    a.sync();
    for cli in [&a, &b] {
        let show = cli.show(&case);
        assert_eq!(show["conflicts"], serde_json::json!([]), "{show}");
        assert_eq!(
            doc(&show, "discharges", &id)["content"]["expected_discharge_date"],
            "2026-03-04"
        );
    }
}

#[test]
fn discharge_referral_safeguarding_legal_and_contacts_round_trip_to_a_fresh_device() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let case = a.ok(&[
        "case",
        "new",
        "--name",
        "Round Trip",
        "--nhs-number",
        "943 476 5919",
        "--dob",
        "1941-03-12",
    ]);
    let discharge = a.ok(&["discharge", "new", &case]);
    for (field, value) in [
        ("pathway", "1"),
        ("medically_optimised_date", "2026-02-26"),
        ("expected_discharge_date", "2026-03-02"),
        ("package_start", "2026-03-02"),
        ("day_one_welfare_check.due", "2026-03-03"),
    ] {
        a.ok(&[
            "discharge",
            "set",
            &discharge,
            "--field",
            field,
            "--value",
            value,
        ]);
    }
    a.ok(&[
        "discharge",
        "equipment",
        &discharge,
        "--item",
        "Perching stool",
        "--status",
        "ordered",
    ]);
    let referral = a.ok(&[
        "referral",
        "new",
        &case,
        "--source",
        "hospital",
        "--urgency",
        "urgent",
        "--reason",
        "Discharge support",
    ]);
    a.ok(&["referral", "triage", &referral, "--decision", "accepted"]);
    let sg = a.ok(&[
        "safeguarding",
        "new",
        &case,
        "--concern",
        "Unexplained bruising",
    ]);
    a.ok(&[
        "safeguarding",
        "set",
        &sg,
        "--field",
        "s42_decision",
        "--value",
        "enquiry",
    ]);
    a.ok(&[
        "safeguarding",
        "set",
        &sg,
        "--field",
        "alleged_source_of_harm.relationship",
        "--value",
        "neighbour",
    ]);
    let mha = a.ok(&[
        "legal",
        "add",
        &case,
        "--kind",
        "mha_section",
        "--detail",
        "2",
        "--start",
        "2026-01-10",
    ]);
    a.ok(&["legal", "end", &case, &mha, "--date", "2026-02-07"]);
    a.ok(&[
        "legal",
        "add",
        &case,
        "--kind",
        "lpa",
        "--scope",
        "health_and_welfare",
    ]);
    a.ok(&[
        "contact",
        "add",
        &case,
        "--role",
        "attorney",
        "--name",
        "Sue",
        "--may-decide",
        "both",
    ]);
    a.ok(&[
        "contact",
        "add",
        &case,
        "--role",
        "nearest-relative",
        "--name",
        "Ray",
        "--relationship",
        "brother",
    ]);
    a.sync();

    let fresh = device(&tmp, &server, &staff, "fresh", "Priya Shah");
    fresh.sync();
    let show = fresh.show(&case);
    let d = &doc(&show, "discharges", &discharge)["content"];
    assert_eq!(d["pathway"], "1");
    assert_eq!(d["expected_discharge_date"], "2026-03-02");
    assert_eq!(d["day_one_welfare_check"]["due"], "2026-03-03");
    let kit: Vec<&Value> = d["equipment"].as_object().unwrap().values().collect();
    assert_eq!(kit[0]["item"], "Perching stool");
    let r = &doc(&show, "referrals", &referral)["content"];
    assert_eq!(r["triage_decision"], "accepted");
    assert_eq!(r["triaged_by"], staff_id(&a).to_string());
    assert_eq!(r["reason"], "Discharge support");
    let s = &doc(&show, "safeguarding", &sg)["content"];
    assert_eq!(s["concern"], "Unexplained bruising");
    assert_eq!(s["alleged_source_of_harm"]["third_party"], "yes");
    let record = &show["record"];
    assert_eq!(record["legal_status"][&mha]["status"], "ended");
    assert_eq!(record["legal_status"][&mha]["end"], "2026-02-07");
    let roles: Vec<&str> = record["contacts"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    assert!(roles.contains(&"attorney") && roles.contains(&"nearest_relative"));
    let page = fresh.ok(&["show", &case]);
    for line in [
        "Legal status: mha section 2, from 2026-01-10, until 2026-02-07 (ended)",
        "attorney: Sue, may decide: both",
        "pathway: 1",
        "Safeguarding enquiry (restricted)",
        "triage decision: accepted",
    ] {
        assert!(page.contains(line), "{line:?} is not on the page:\n{page}");
    }
    // The enquiry is restricted: the server keeps an access list on it.
    drop(server);
    let docs = admin(&data, &["case", "show", "--case", &case, "--json"]);
    let docs: Value = serde_json::from_str(&docs).unwrap();
    let listed = docs["docs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["doc_id"] == sg.as_str())
        .unwrap_or_else(|| panic!("{docs}"));
    assert!(listed["access_teams"].is_array(), "{listed}");
    assert_eq!(listed["kind"], DocKind::Safeguarding.as_str());

    // The export carries every kind, and flags the alleged source of harm as third-party data.
    let exported = tmp.path().join("export");
    server_cmd_on(
        &["export"],
        &data,
        &["--case", &case, "--out", exported.to_str().unwrap()],
    );
    let record: Value =
        serde_json::from_slice(&std::fs::read(exported.join("record.json")).unwrap()).unwrap();
    let kinds: Vec<&str> = record["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    for kind in ["case", "discharge", "referral", "safeguarding"] {
        assert!(kinds.contains(&kind), "{kind} is not exported: {kinds:?}");
    }
    let enquiry = record["documents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["doc_id"] == sg.as_str())
        .unwrap();
    assert_eq!(
        enquiry["third_party"],
        serde_json::json!(["alleged_source_of_harm"])
    );
    let html = std::fs::read_to_string(exported.join("record.html")).unwrap();
    // Every field of the alleged source of harm stands flagged for redaction where it is shown.
    let row = html
        .split("<tr>")
        .find(|r| r.contains("Alleged source of harm › Relationship"))
        .unwrap_or_else(|| panic!("no row for the alleged source of harm:\n{html}"));
    assert!(
        row.contains("class=\"redact\"") && row.contains("neighbour"),
        "the alleged source of harm is not flagged for redaction: {row}"
    );
    let _ = DocId::new_random();
}

#[test]
fn the_cli_refuses_invalid_identifiers_dates_vocabularies_and_empty_notes() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let a = device(&tmp, &server, &staff, "a", "Priya Shah");
    let (code, err) = a.fails(&["case", "new", "--name", "X", "--nhs-number", "943 476 5918"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Modulus 11"), "{err}");
    let (_, err) = a.fails(&["case", "new", "--name", "X", "--dob", "2999-01-01"]);
    assert!(err.contains("future"), "{err}");
    let (_, err) = a.fails(&["case", "new", "--name", "X", "--dob", "1941-02-30"]);
    assert!(err.contains("calendar"), "{err}");
    let case = a.ok(&["case", "new", "--name", "Valid Person"]);
    let (_, err) = a.fails(&["note", "add", &case, "--text", "  \n "]);
    assert!(err.contains("empty"), "{err}");
    let d = a.ok(&["discharge", "new", &case]);
    let (_, err) = a.fails(&["discharge", "set", &d, "--field", "pathway", "--value", "4"]);
    assert!(err.contains("0, 1, 2, 3"), "{err}");
    let (_, err) = a.fails(&[
        "discharge",
        "set",
        &d,
        "--field",
        "package_start",
        "--value",
        "2026-13-01",
    ]);
    assert!(err.contains("YYYY-MM-DD"), "{err}");
    let m = a.ok(&["assessment", "new", &case, "--type", "mca"]);
    let (_, err) = a.fails(&[
        "assessment",
        "set",
        &m,
        "--field",
        "outcome",
        "--value",
        "maybe",
    ]);
    assert!(err.contains("has_capacity"), "{err}");
    let (_, err) = a.fails(&["assessment", "set", &m, "--field", "colour", "--value", "x"]);
    assert!(err.contains("not a field"), "{err}");
    let (_, err) = a.fails(&["assessment", "new", &case, "--type", "vibes"]);
    assert!(err.contains("early_help"), "{err}");
    let (_, err) = a.fails(&["legal", "add", &case, "--kind", "lpa", "--scope", "money"]);
    assert!(err.contains("health_and_welfare"), "{err}");
    let (_, err) = a.fails(&["contact", "add", &case, "--role", "friend", "--name", "A"]);
    assert!(err.contains("nearest_relative"), "{err}");
    // None of it reached the record.
    let report = a.sync();
    assert_eq!(
        report["rejections"].as_array().map_or(0, Vec::len),
        0,
        "{report}"
    );
    drop(data);
}

#[test]
fn the_demo_borough_holds_the_statutory_records() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    priya.sync();
    let cases = priya.json(&["case", "list", "--json"]);
    let case_of = |name: &str| -> String {
        cases
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {cases}"))["case_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let assessments =
        |show: &Value| -> Vec<Value> { show["assessments"].as_array().unwrap().to_vec() };

    let peggy = priya.show(&case_of("Peggy Doyle"));
    let mca = &assessments(&peggy)[0]["content"];
    assert_eq!(mca["outcome"], "has_capacity");
    assert_eq!(mca["status"], "completed");
    assert_eq!(peggy["discharges"][0]["content"]["pathway"], "1");
    assert!(plan_text(&peggy).contains("Risk Peggy chooses to take"));

    let jean = priya.show(&case_of("Jean Reilly"));
    let mca = &assessments(&jean)[0]["content"];
    assert_eq!(mca["outcome"], "lacks_capacity");
    assert_eq!(mca["status"], "completed");
    let consulted: Vec<&str> = mca["best_interests"]["consulted"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["relationship"].as_str().unwrap())
        .collect();
    assert_eq!(consulted.len(), 2, "{consulted:?}");

    let tom = priya.show(&case_of("Tom Reilly"));
    let carers = &assessments(&tom)[0]["content"];
    assert_eq!(
        (carers["type"].as_str(), carers["eligible"].as_str()),
        (Some("carers"), Some("yes"))
    );

    let daniel = priya.show(&case_of("Daniel Okafor"));
    let legal: Vec<&Value> = daniel["record"]["legal_status"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert!(legal
        .iter()
        .any(|l| l["kind"] == "mha_section" && l["detail"] == "2"));
    let contacts: Vec<&Value> = daniel["record"]["contacts"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert!(contacts.iter().any(|c| c["role"] == "nearest_relative"));

    let lena = device(&tmp, &server, &staff, "lena", "Lena Fischer");
    lena.sync();
    let aisha = lena.json(&["case", "list", "--json"])[0]["case_id"]
        .as_str()
        .unwrap()
        .to_string();
    let aisha = lena.show(&aisha);
    assert_eq!(assessments(&aisha)[0]["content"]["type"], "early_help");
}
