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
use casenote_protocol::{CaseId, DocKind, StaffId};
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
        let (content, conflicts) = record::view(&doc);
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
            "conflicts": conflicts,
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
    link_originals(&mut notes);
    notes.sort_by_key(|n| (n["occurred_at_ms"].as_i64(), n["note_id"].to_string()));
    let case_content = documents
        .iter()
        .find(|d| d["kind"] == "case")
        .map(|d| d["content"].clone())
        .unwrap_or(Value::Null);
    let person = case_content[field::NAME].as_str().unwrap_or("").to_string();
    // Stubs of notes moved to another person's record (`crate::misfile`), oldest first.
    let mut moved: Vec<Value> = case_content[field::MOVED_NOTES]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, v)| {
            let mut v = v.clone();
            v["stub_id"] = json!(id);
            v
        })
        .collect();
    moved.sort_by_key(|v| v["at_ms"].as_i64());
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
        "moved_notes": moved,
        "assessments": assessments,
        "documents": documents,
    });
    let mut record = record;
    record["people"] = people(store, &record)?;
    record["fhir_provenance"] = Value::Array(fhir_provenance(&record));
    for d in record["documents"].as_array_mut().into_iter().flatten() {
        d["provenance"] = Value::Array(prsb_provenance(d));
    }

    let out = ExportedRecord {
        html: crate::export_html::render(&record, &person),
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

/// Gives each note that amends another the original's text and status, so the page and the
/// JSON show every amendment with what it amends.
fn link_originals(notes: &mut [Value]) {
    let originals: HashMap<String, (Value, Value)> = notes
        .iter()
        .filter_map(|n| {
            let id = n["note_id"].as_str()?.to_string();
            Some((id, (n["text"].clone(), n["status"].clone())))
        })
        .collect();
    for n in notes.iter_mut() {
        let Some(target) = n["amends"]["note_id"].as_str().map(str::to_string) else {
            continue;
        };
        if let Some((text, status)) = originals.get(&target) {
            n["original"] = json!({"note_id": target, "text": text, "status": status});
        }
    }
}

/// Who every staff id the record names is, from the directory: name, role and organisation,
/// keyed by staff id. Found by looking up every string of the record that is a uuid (the walk
/// keeps its own stack: the content is what devices wrote).
fn people(store: &dyn Store, record: &Value) -> anyhow::Result<Value> {
    let mut ids = std::collections::BTreeSet::new();
    let mut stack = vec![record];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => {
                if let Ok(u) = uuid::Uuid::parse_str(s) {
                    ids.insert(u);
                }
            }
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(o) => stack.extend(o.values()),
            _ => {}
        }
    }
    let mut out = serde_json::Map::new();
    for id in ids {
        let Some(staff) = read(store, |t| t.staff(StaffId(id)))? else {
            continue;
        };
        let org = read(store, |t| t.org(staff.org_id))?.map(|o| o.name);
        out.insert(
            id.to_string(),
            json!({"name": staff.name, "role": staff.role.to_string(), "org": org}),
        );
    }
    Ok(Value::Object(out))
}

/// A time in ms as RFC 3339 (UTC), as FHIR's `instant` and `dateTime` want it.
fn rfc3339(ms: i64) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

/// The provenance of each change of a document in the items of PRSB's "person completing
/// record" (name, role, organisation, professional identifier, date completed), with the device
/// and the server's receipt beside them.
fn prsb_provenance(doc: &Value) -> Vec<Value> {
    let history = doc["history"].as_array().into_iter().flatten();
    history
        .map(|c| {
            json!({
                "change": c["hash"],
                "seq": c["seq"],
                "person_completing_record": {
                    "name": c["staff_name"],
                    "role": c["role"],
                    "organisation": c["org"],
                    "professional_identifier": c["staff_id"],
                },
                "date_completed": c["device_time_ms"].as_i64().map(crate::uk_time::when),
                "date_completed_ms": c["device_time_ms"],
                "date_received_by_server": c["received_at_ms"].as_i64().map(crate::uk_time::when),
                "date_received_by_server_ms": c["received_at_ms"],
                "device_id": c["device_id"],
            })
        })
        .collect()
}

/// One FHIR R4 `Provenance` resource per change of every document: the document as `target`,
/// the server's receipt as `recorded` (the device's clock when unknown), the device's clock as
/// `occurredDateTime`, the member of staff as the `author` agent on behalf of their
/// organisation, the device as the `enterer`, and whether the change made the document.
fn fhir_provenance(record: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for d in record["documents"].as_array().into_iter().flatten() {
        for (i, c) in d["history"].as_array().into_iter().flatten().enumerate() {
            let device_ms = c["device_time_ms"].as_i64().unwrap_or(0);
            let recorded = c["received_at_ms"].as_i64().unwrap_or(device_ms);
            let participant = |code: &str, display: &str| {
                json!({"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                    "code": code, "display": display}]})
            };
            // A change from before the server bound actors to staff names nobody.
            let who = match c["staff_id"].as_str() {
                Some(id) => json!({"reference": format!("Practitioner/{id}"),
                                   "display": c["staff_name"]}),
                None => json!({"display": "unknown (received before attribution was kept)"}),
            };
            let mut agents = vec![json!({
                "type": participant("author", "Author"),
                "role": [{"text": c["role"]}],
                "who": who,
                "onBehalfOf": {"display": c["org"]},
            })];
            if !c["device_id"].is_null() {
                agents.push(json!({
                    "type": participant("enterer", "Enterer"),
                    "who": {"reference": format!("Device/{}", text(&c["device_id"]))},
                }));
            }
            let (code, display) = if i == 0 {
                ("CREATE", "create")
            } else {
                ("UPDATE", "revise")
            };
            out.push(json!({
                "resourceType": "Provenance",
                "id": text(&c["hash"]),
                "target": [{"reference": format!("DocumentReference/{}", text(&d["doc_id"])),
                            "display": d["kind"]}],
                "occurredDateTime": rfc3339(device_ms),
                "recorded": rfc3339(recorded),
                "activity": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                    "code": code, "display": display}]},
                "agent": agents,
            }));
        }
    }
    out
}

/// A JSON value as plain text (strings without quotes; absent as a dash).
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
