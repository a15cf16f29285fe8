//! `casenote-server export`: a person's whole record, for an administrator (a subject access
//! request, a court, a transfer of care), as `record.json` and a readable, self-contained
//! `record.html`.
//!
//! Every document of the case is included, restricted ones too (this is the person's whole
//! record, exported by an administrator; the page says so), each with its server header, its
//! content (`record::content_json`, the same on every device holding the same changes), any
//! unresolved conflicts, and the provenance of every change: staff id and name, role, org,
//! device, the server's receipt time and the device's own clock ([`crate::history`]). Notes are
//! also listed together, in the order they happened, with their amendments and the originals
//! those amend, and with occurred, recorded, filed and received times. Assessments are listed
//! together too (type, status, who completed each and when the server received the completion,
//! what each amends). Fields that hold third-party data (a safeguarding enquiry's alleged source
//! of harm, marked `third_party: yes` in the record) are named in each document's `third_party`
//! list and flagged on the page, so that whoever discloses the record can redact them.
//!
//! [`build`] makes the record and audits it (`export`); [`case`] also writes the two files, as
//! the CLI does on a stopped store. The admin API answers what [`build`] returns and the CLI
//! writes the files on its side ([`write_files`]).

use crate::admin::act::ExportedRecord;
use crate::history;
use crate::model::{AuditKind, AuditRecord, By};
use crate::store::{read, write, Store};
use crate::validate;
use anyhow::Context;
use automerge::{ReadDoc, ROOT};
use casenote_protocol::record::{self, field};
use casenote_protocol::wire::HistoryEntry;
use casenote_protocol::{CaseId, DocKind};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct Exported {
    pub json_path: PathBuf,
    pub html_path: PathBuf,
    pub documents: usize,
    pub notes: usize,
    pub restricted: usize,
    pub changes: usize,
}

impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {} and {} ({} documents: {} notes, {} restricted; {} changes with provenance)",
            self.json_path.display(),
            self.html_path.display(),
            self.documents,
            self.notes,
            self.restricted,
            self.changes
        )
    }
}

fn received_of(history: &[HistoryEntry], hash: Option<automerge::ChangeHash>) -> Option<i64> {
    let hash = hex::encode(hash?.0);
    history
        .iter()
        .find(|h| h.hash == hash)
        .and_then(|h| h.received_at_ms)
}

/// Exports case `case` into `out_dir` (created if missing), audited with who asked (`by`).
pub fn case(
    store: &dyn Store,
    by: By,
    case: CaseId,
    out_dir: &Path,
    now_ms: i64,
) -> anyhow::Result<Exported> {
    let built = build(store, by, case, now_ms)?;
    write_files(&built, out_dir)
}

/// Writes an export's `record.json` and `record.html` into `out_dir` (created if missing).
pub fn write_files(built: &ExportedRecord, out_dir: &Path) -> anyhow::Result<Exported> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("could not create {}", out_dir.display()))?;
    let json_path = out_dir.join("record.json");
    let html_path = out_dir.join("record.html");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&built.record)?)
        .with_context(|| format!("could not write {}", json_path.display()))?;
    std::fs::write(&html_path, &built.html)
        .with_context(|| format!("could not write {}", html_path.display()))?;
    Ok(Exported {
        json_path,
        html_path,
        documents: built.documents,
        notes: built.notes,
        restricted: built.restricted,
        changes: built.changes,
    })
}

/// A person's whole record, as `record.json`'s value and `record.html`'s text, audited
/// (`export`) with who asked (`by`) before it is returned.
pub fn build(
    store: &dyn Store,
    by: By,
    case: CaseId,
    now_ms: i64,
) -> anyhow::Result<ExportedRecord> {
    let rec = read(store, |t| t.case(case))?.with_context(|| format!("no case with id {case}"))?;
    let org_name = |id| -> anyhow::Result<String> {
        Ok(read(store, |t| t.org(id))?
            .map(|o| o.name)
            .unwrap_or_default())
    };
    let team_of = |id| read(store, |t| t.team(id));
    let mut teams = Vec::new();
    for t in &rec.teams {
        let team = team_of(*t)?;
        teams.push(json!({
            "team_id": t,
            "name": team.as_ref().map(|t| t.name.clone()),
            "org": match &team { Some(t) => Some(org_name(t.org_id)?), None => None },
        }));
    }
    let mut documents = Vec::new();
    let mut notes = Vec::new();
    let mut assessments = Vec::new();
    let mut changes = 0usize;
    let mut restricted = 0usize;
    let mut ids = read(store, |t| t.docs_of_case(case))?;
    ids.sort();
    for id in ids {
        let Some(doc_rec) = read(store, |t| t.doc(id))? else {
            continue;
        };
        let h = &doc_rec.header;
        let mut doc = validate::materialise(store, id)?;
        let content = record::content_json(&doc);
        let history = history::entries(store, id)?;
        changes += history.len();
        if h.kind.is_restricted() {
            restricted += 1;
        }
        let first_received = history.first().and_then(|e| e.received_at_ms);
        let last_received = history.last().and_then(|e| e.received_at_ms);
        if h.kind == DocKind::Note {
            let filed_change = match doc.get(ROOT, field::STATUS) {
                Ok(Some((_, op)))
                    if record::get_str(&doc, &ROOT, field::STATUS).as_deref() == Some("filed") =>
                {
                    doc.hash_for_opid(&op)
                }
                _ => None,
            };
            notes.push(json!({
                "note_id": id,
                "status": content.get(field::STATUS),
                "note_kind": content.get(field::NOTE_KIND),
                "author": content.get(field::AUTHOR),
                "occurred_at_ms": content.get(field::OCCURRED_AT),
                "recorded_at_ms": content.get(field::RECORDED_AT),
                "filed_at_ms": content.get(field::FILED_AT),
                "first_received_at_ms": first_received,
                "filed_received_at_ms": received_of(&history, filed_change),
                "late_entry_reason": content.get(field::LATE_ENTRY_REASON),
                "amends": content.get(field::AMENDS),
                "amended_by": [],
                "text": content.get(field::TEXT),
            }));
        }
        if h.kind == DocKind::Assessment {
            assessments.push(json!({
                "doc_id": id,
                "type": content.get("type"),
                "status": content.get(field::STATUS),
                "started_at_ms": content.get("started_at_ms"),
                "completed_at_ms": content.get("completed_at_ms"),
                "completed_by": content.get("completed_by"),
                "completion_received_at_ms": doc_rec.filed_ms,
                "amends": content.get("amends"),
            }));
        }
        let third_party: Vec<&str> = THIRD_PARTY
            .iter()
            .filter(|(kind, key)| {
                *kind == h.kind && content[*key]["third_party"].as_str() == Some("yes")
            })
            .map(|(_, key)| *key)
            .collect();
        let access = match &h.access_teams {
            Some(list) => {
                let mut named = Vec::new();
                for t in list {
                    named.push(json!({"team_id": t, "name": team_of(*t)?.map(|t| t.name)}));
                }
                Some(named)
            }
            None => None,
        };
        documents.push(json!({
            "doc_id": id,
            "kind": h.kind.as_str(),
            "owner_org": {"org_id": h.owner_org, "name": org_name(h.owner_org)?},
            "access_teams": access,
            "created_by": h.created_by,
            "created_ms": h.created_ms,
            "heads": doc.get_heads().iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            "first_received_at_ms": first_received,
            "last_received_at_ms": last_received,
            "content": content,
            "conflicts": record::conflicts(&doc),
            "third_party": third_party,
            "history": history,
        }));
    }
    // Link amendments both ways.
    let mut amended_by: HashMap<String, Vec<Value>> = HashMap::new();
    for n in &notes {
        if let Some(target) = n["amends"]["note_id"].as_str() {
            amended_by
                .entry(target.to_string())
                .or_default()
                .push(json!({"note_id": n["note_id"], "kind": n["amends"]["kind"],
                             "reason": n["amends"]["reason"]}));
        }
    }
    for n in &mut notes {
        let key = n["note_id"].as_str().unwrap_or_default().to_string();
        if let Some(list) = amended_by.remove(&key) {
            n["amended_by"] = Value::Array(list);
        }
    }
    notes.sort_by_key(|n| (n["occurred_at_ms"].as_i64(), n["note_id"].to_string()));
    let case_content = documents
        .iter()
        .find(|d| d["kind"] == "case")
        .map(|d| d["content"].clone())
        .unwrap_or(Value::Null);
    let person = case_content[field::NAME].as_str().unwrap_or("").to_string();
    let record = json!({
        "exported_at_ms": now_ms,
        "includes_restricted": true,
        "case": {
            "case_id": case,
            "owner_org": {"org_id": rec.owner_org, "name": org_name(rec.owner_org)?},
            "created_ms": rec.created_ms,
            "teams": teams,
        },
        "notes": notes,
        "assessments": assessments,
        "documents": documents,
    });

    let out = ExportedRecord {
        html: render_html(&record, &person),
        documents: record["documents"].as_array().map_or(0, Vec::len),
        notes: record["notes"].as_array().map_or(0, Vec::len),
        restricted,
        changes,
        record,
    };
    let audit = AuditRecord::new(
        AuditKind::Export,
        now_ms,
        json!({
            "case_id": case,
            "documents": out.documents,
            "notes": out.notes,
            "restricted": out.restricted,
            "changes": out.changes,
        }),
    )
    .by(by);
    write(store, |t| t.audit_append(audit.clone()))?;
    store.flush()?;
    Ok(out)
}

/// The maps that hold third-party data, by document kind (marked `third_party: yes` inside).
const THIRD_PARTY: &[(DocKind, &str)] = &[(DocKind::Safeguarding, "alleged_source_of_harm")];

/// HTML-escapes `s` (text and attribute values).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as plain text (strings without quotes; absent as a dash).
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render_html(record: &Value, person: &str) -> String {
    let e = |v: &Value| escape(&text(v));
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    h.push_str(&format!("<title>Record of {}</title>\n", escape(person)));
    h.push_str(
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}\
         table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #bbb;padding:2px 6px;\
         text-align:left;vertical-align:top}pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em}\
         .note{border-left:4px solid #468;padding-left:1em;margin:1.5em 0}\
         .warn{background:#fff3cd;padding:.5em;border:1px solid #e0c060}</style>\n</head><body>\n",
    );
    h.push_str(&format!("<h1>Record of {}</h1>\n", escape(person)));
    let case = &record["case"];
    h.push_str(&format!(
        "<p>Case <code>{}</code>, owned by {}. Exported at {} (ms since the Unix epoch, server clock).</p>\n",
        e(&case["case_id"]),
        e(&case["owner_org"]["name"]),
        e(&record["exported_at_ms"])
    ));
    h.push_str(
        "<p class=\"warn\">This export is the person's whole record and includes restricted \
         documents (for example safeguarding sections) that most staff may not see. It was \
         produced by an administrator; handle it accordingly.</p>\n",
    );
    h.push_str("<h2>Team around the person</h2>\n<ul>\n");
    for t in case["teams"].as_array().into_iter().flatten() {
        h.push_str(&format!("<li>{} ({})</li>\n", e(&t["name"]), e(&t["org"])));
    }
    h.push_str("</ul>\n<h2>Notes, in the order they happened</h2>\n");
    for n in record["notes"].as_array().into_iter().flatten() {
        let id = text(&n["note_id"]);
        h.push_str(&format!(
            "<div class=\"note\" id=\"note-{}\">\n<h3>{} note <code>{}</code> ({})</h3>\n",
            escape(&id),
            e(&n["note_kind"]),
            escape(&id),
            e(&n["status"])
        ));
        h.push_str(&format!(
            "<p>By {} ({}, {}, {}). Occurred {}; recorded {} (device clock); filed {}; first \
             received {}; filing received {} (server clock).</p>\n",
            e(&n["author"]["staff_id"]),
            e(&n["author"]["role"]),
            e(&n["author"]["org"]),
            e(&n["author"]["team"]),
            e(&n["occurred_at_ms"]),
            e(&n["recorded_at_ms"]),
            e(&n["filed_at_ms"]),
            e(&n["first_received_at_ms"]),
            e(&n["filed_received_at_ms"])
        ));
        if !n["late_entry_reason"].is_null() {
            h.push_str(&format!(
                "<p>Late entry: {}</p>\n",
                e(&n["late_entry_reason"])
            ));
        }
        if let Some(target) = n["amends"]["note_id"].as_str() {
            h.push_str(&format!(
                "<p>This note is a {} of <a href=\"#note-{}\">note {}</a>: {}</p>\n",
                e(&n["amends"]["kind"]),
                escape(target),
                escape(target),
                e(&n["amends"]["reason"])
            ));
        }
        h.push_str(&format!("<pre>{}</pre>\n", e(&n["text"])));
        for a in n["amended_by"].as_array().into_iter().flatten() {
            let aid = text(&a["note_id"]);
            h.push_str(&format!(
                "<p>Amended by <a href=\"#note-{}\">note {}</a> ({}): {}</p>\n",
                escape(&aid),
                escape(&aid),
                e(&a["kind"]),
                e(&a["reason"])
            ));
        }
        h.push_str("</div>\n");
    }
    h.push_str("<h2>Assessments</h2>\n<ul>\n");
    for a in record["assessments"].as_array().into_iter().flatten() {
        h.push_str(&format!(
            "<li>{} assessment <code>{}</code>: {}; started {}; completed {} by {} (received {})",
            e(&a["type"]),
            e(&a["doc_id"]),
            e(&a["status"]),
            e(&a["started_at_ms"]),
            e(&a["completed_at_ms"]),
            e(&a["completed_by"]),
            e(&a["completion_received_at_ms"])
        ));
        if a["amends"].is_object() {
            h.push_str(&format!(
                "; a {} of <code>{}</code>: {}",
                e(&a["amends"]["kind"]),
                e(&a["amends"]["assessment_id"]),
                e(&a["amends"]["reason"])
            ));
        }
        h.push_str("</li>\n");
    }
    h.push_str("</ul>\n<h2>Documents and their provenance</h2>\n");
    for d in record["documents"].as_array().into_iter().flatten() {
        h.push_str(&format!(
            "<h3>{} <code>{}</code></h3>\n<p>Owned by {}; created {}.",
            e(&d["kind"]),
            e(&d["doc_id"]),
            e(&d["owner_org"]["name"]),
            e(&d["created_ms"])
        ));
        if let Some(list) = d["access_teams"].as_array() {
            let names: Vec<String> = list.iter().map(|t| e(&t["name"])).collect();
            h.push_str(&format!(
                " Restricted: visible only to {}.",
                names.join(", ")
            ));
        }
        h.push_str("</p>\n");
        let third: Vec<String> = d["third_party"]
            .as_array()
            .into_iter()
            .flatten()
            .map(e)
            .collect();
        if !third.is_empty() {
            h.push_str(&format!(
                "<p class=\"warn\">Third-party data: {}. Consider redacting it before the record \
                 is disclosed.</p>\n",
                third.join(", ")
            ));
        }
        let content = serde_json::to_string_pretty(&d["content"]).unwrap_or_default();
        h.push_str(&format!("<pre>{}</pre>\n", escape(&content)));
        if d["conflicts"].as_array().is_some_and(|c| !c.is_empty()) {
            h.push_str(&format!(
                "<p>Unresolved conflicts:</p><pre>{}</pre>\n",
                escape(&d["conflicts"].to_string())
            ));
        }
        h.push_str(
            "<table><tr><th>seq</th><th>staff</th><th>role</th><th>org</th><th>device</th>\
             <th>received (server)</th><th>device time</th><th>ops</th><th>change</th></tr>\n",
        );
        for c in d["history"].as_array().into_iter().flatten() {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{} <small>{}</small></td><td>{}</td><td>{}</td><td><small>{}</small></td>\
                 <td>{}</td><td>{}</td><td>{}</td><td><small>{}</small></td></tr>\n",
                e(&c["seq"]),
                e(&c["staff_name"]),
                e(&c["staff_id"]),
                e(&c["role"]),
                e(&c["org"]),
                e(&c["device_id"]),
                e(&c["received_at_ms"]),
                e(&c["device_time_ms"]),
                e(&c["ops"]),
                escape(&text(&c["hash"]).chars().take(16).collect::<String>())
            ));
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}
