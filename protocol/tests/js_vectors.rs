//! Rust-to-JS test vectors (issue 14), the Rust half: documents written with the record code
//! (`web/test/vectors/rust.json`, rewritten when `CASENOTE_WRITE_VECTORS=1`, else checked to be
//! current) that the web app's `@automerge/automerge` 3 must read alike (`web/test/
//! vectors.test.mjs`), and documents the web app's record code wrote (`js.json`) read here with
//! the record code: the same view, scalars where the schema wants scalars, text positions that
//! agree (JS counts UTF-16 code units, Rust code points), and plain JS strings seen as the Text
//! the schema refuses for a scalar field.

use automerge::transaction::CommitOptions;
use automerge::{ActorId, AutoCommit, ObjType, ReadDoc, ROOT};
use casenote_protocol::record::{self, field, NewNote, NoteAuthor, NoteKind};
use casenote_protocol::CaseId;
use serde_json::{json, Value};
use std::path::PathBuf;

const TIME_MS: i64 = 1_767_225_600_000;
const NOTE_TEXT: &str = "Café 🙂 naïve — 𝄞 e\u{301}";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/test/vectors")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn fixed(actor: u8) -> AutoCommit {
    AutoCommit::new().with_actor(ActorId::from([actor; 16]))
}

fn commit(doc: &mut AutoCommit, at: i64) {
    doc.commit_with(CommitOptions::default().with_time(at));
}

fn case_id() -> CaseId {
    "11111111-2222-4333-8444-555555555555".parse().unwrap()
}

fn vector(name: &str, doc: &mut AutoCommit, checks: Value) -> Value {
    json!({ "name": name, "doc": hex(&doc.save()), "view": record::content_json(doc), "checks": checks })
}

fn text_checks(field: &str, text: &str, scalars: &[&str]) -> Value {
    json!({
        "text_field": field,
        "text": text,
        "utf16_length": text.encode_utf16().count(),
        "code_points": text.chars().count(),
        "scalars": scalars,
    })
}

fn note() -> AutoCommit {
    let mut note = fixed(1);
    let new = NewNote {
        case_id: case_id(),
        kind: NoteKind::Visit,
        author: NoteAuthor {
            staff_id: "0a0b0c0d-0e0f-1011-1213-141516171819".into(),
            role: "social_worker".into(),
            org: "Castlebridge Council".into(),
            team: "Locality Team North".into(),
        },
        occurred_at_ms: TIME_MS,
        recorded_at_ms: TIME_MS,
        text: NOTE_TEXT.into(),
        amends: None,
        late_entry_reason: None,
    };
    record::init_note(&mut note, &new).unwrap();
    commit(&mut note, TIME_MS);
    let id = casenote_protocol::DocId(uuid_of(7));
    record::file_note(&mut note, id, TIME_MS + 1).unwrap();
    commit(&mut note, TIME_MS + 1);
    note
}

fn uuid_of(b: u8) -> uuid::Uuid {
    uuid::Uuid::from_bytes([b; 16])
}

fn plan() -> AutoCommit {
    let mut plan = fixed(2);
    record::init_plan(&mut plan, case_id()).unwrap();
    record::append_root_text(&mut plan, "plan", field::NARRATIVE, "🙂🙂 home by Friday").unwrap();
    commit(&mut plan, TIME_MS);
    // Code point 2: after both emoji (UTF-16 position 4).
    record::splice_root_text(&mut plan, "plan", field::NARRATIVE, 2, 0, "X").unwrap();
    commit(&mut plan, TIME_MS + 1);
    plan
}

fn case() -> AutoCommit {
    let mut case = fixed(3);
    let who = record::Identity {
        name: "Zoë O'Brien-Łukasz".into(),
        ..Default::default()
    };
    record::init_case(&mut case, case_id(), &who).unwrap();
    record::append_root_text(&mut case, "case", field::ABOUT_ME, "I like 🐦 at 7am").unwrap();
    // (No alert: an alert's key is a random id, so the view would differ on every run.)
    commit(&mut case, TIME_MS);
    case
}

/// The documents this side writes.
fn rust_vectors() -> Value {
    let scalars = ["schema", "case_id", "status", "note_kind"];
    json!({ "vectors": [
        vector("note-filed-in-rust", &mut note(), text_checks("text", NOTE_TEXT, &scalars)),
        vector("plan-spliced-in-rust", &mut plan(), text_checks("narrative", "🙂🙂X home by Friday", &["schema", "case_id"])),
        vector("case-written-in-rust", &mut case(), text_checks("about_me", "I like 🐦 at 7am", &["schema", "case_id", "name"])),
    ]})
}

/// (view, checks) of every vector.
fn views(v: &Value) -> Vec<(Value, Value)> {
    v["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["view"].clone(), x["checks"].clone()))
        .collect()
}

#[test]
fn rust_json_is_what_the_record_code_writes_today() {
    let path = dir().join("rust.json");
    let fresh = rust_vectors();
    if std::env::var_os("CASENOTE_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&fresh).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
    }
    let committed: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        views(&fresh),
        views(&committed),
        "rust.json is stale: CASENOTE_WRITE_VECTORS=1 cargo test -p casenote-protocol --test js_vectors"
    );
    for v in committed["vectors"].as_array().unwrap() {
        let doc = AutoCommit::load(&unhex(v["doc"].as_str().unwrap())).unwrap();
        assert_eq!(record::content_json(&doc), v["view"], "{}", v["name"]);
    }
}

fn js(name: &str) -> (AutoCommit, Value) {
    let all: Value =
        serde_json::from_slice(&std::fs::read(dir().join("js.json")).unwrap()).unwrap();
    let v = all["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name} in js.json"))
        .clone();
    (
        AutoCommit::load(&unhex(v["doc"].as_str().unwrap())).unwrap(),
        v,
    )
}

#[test]
fn a_note_written_by_the_web_app_reads_the_same_here() {
    let (doc, v) = js("note-written-in-js");
    assert_eq!(record::content_json(&doc), v["view"]);
    for key in v["checks"]["scalars"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        assert!(
            record::get_str(&doc, &ROOT, key).is_some(),
            "{key} is not a scalar string"
        );
    }
    let text_obj = record::get_obj(&doc, &ROOT, field::TEXT, ObjType::Text).expect("text is Text");
    let text = doc.text(&text_obj).unwrap();
    assert_eq!(text, v["checks"]["text"].as_str().unwrap());
    // JS inserted "X" at UTF-16 position 2; here it is at code point 1.
    let at = text.chars().position(|c| c == 'X').unwrap();
    assert_eq!(at as u64, v["checks"]["x_at_code_point"].as_u64().unwrap());
    assert_eq!(record::note_status(&doc), record::NoteStatus::Draft);
}

#[test]
fn plain_js_strings_are_text_which_the_schema_does_not_take_for_a_scalar() {
    let (doc, v) = js("plain-strings-are-text");
    for key in v["checks"]["text_not_scalar"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        assert_eq!(record::get_str(&doc, &ROOT, key), None, "{key}");
        assert!(
            record::get_obj(&doc, &ROOT, key, ObjType::Text).is_some(),
            "{key}"
        );
    }
    assert_eq!(
        record::get_str(&doc, &ROOT, "note_kind").as_deref(),
        Some("visit")
    );
}
