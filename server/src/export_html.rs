//! `record.html`: a person's whole record ([`crate::export`]) as a page the person and a court
//! can read, and print.
//!
//! Times are UK local time ([`crate::uk_time`]: GMT or BST, named), staff are named with their
//! role and organisation (the record's `people`, from the directory), and each kind of record is
//! laid out for reading: the person (identity, alerts, legal status, contacts, About Me), the team
//! around them, the plan, the notes in the order they happened with every amendment beside the
//! original it amends, the statutory documents and restricted sections as labelled fields, and
//! the provenance of every change. Third-party data is flagged for redaction where it stands. A
//! print stylesheet keeps sections whole on paper. Every value a device wrote is escaped; walks
//! over document content keep their own stack (no recursion over what a device wrote).

use crate::export::{escape, text};
use crate::uk_time;
use serde_json::Value;
use std::fmt::Write;

const STYLE: &str = "body{font-family:Georgia,serif;max-width:52em;margin:2em auto;\
line-height:1.45;color:#111;padding:0 1em}h1,h2,h3{font-family:Arial,sans-serif}\
h2{border-bottom:2px solid #345;padding-bottom:.2em;margin-top:2em}\
table{border-collapse:collapse;width:100%;font-size:92%;margin:.5em 0}\
td,th{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top}\
th{background:#eef1f5}.text{white-space:pre-wrap;background:#f7f7f7;padding:.5em;\
border-left:3px solid #bbb}.note{border-left:4px solid #468;padding-left:1em;margin:1.5em 0}\
.amendment{border-left-color:#a60}.original{background:#fff8e6;padding:.5em;margin:.5em 0}\
.warn{background:#fff3cd;padding:.5em;border:1px solid #e0c060}\
.redact{background:#fde2e2;border:2px dashed #c00;padding:.3em}.meta{color:#444;font-size:92%}\
nav ul{columns:2}\
@media print{body{max-width:none;margin:0;font-size:10.5pt;color:#000}nav{display:none}\
h2{page-break-before:always;break-before:page}h2:first-of-type{page-break-before:avoid}\
.note,table,tr,.original,.redact{page-break-inside:avoid;break-inside:avoid}\
a{color:#000;text-decoration:none}.text{background:none;border-left:1px solid #000}\
th{background:none}@page{margin:18mm 15mm;@bottom-right{content:counter(page)}}}";

/// The page for `record` (the export's JSON) of the person named `person`.
pub fn render(record: &Value, person: &str) -> String {
    let page = Page {
        people: &record["people"],
    };
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en-GB\"><head><meta charset=\"utf-8\">\n");
    let _ = writeln!(h, "<title>Record of {}</title>", escape(person));
    let _ = writeln!(h, "<style>{STYLE}</style>\n</head><body>");
    page.header(&mut h, record, person);
    page.person(&mut h, record);
    page.plans(&mut h, record);
    page.notes(&mut h, record);
    page.documents_of(&mut h, record, "assessment", "Assessments");
    page.documents_of(&mut h, record, "safeguarding", "Safeguarding enquiries");
    page.documents_of(&mut h, record, "discharge", "Discharge");
    page.documents_of(&mut h, record, "referral", "Referrals");
    page.documents_of(&mut h, record, "restricted", "Restricted sections");
    page.provenance(&mut h, record);
    h.push_str("</body></html>\n");
    h
}

struct Page<'a> {
    people: &'a Value,
}

/// A time in ms (a JSON number) in UK local time, or a dash.
fn when(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".into(), uk_time::when)
}

/// A field name for people: `alleged_source_of_harm` as `Alleged source of harm`.
fn label(key: &str) -> String {
    let key = key.strip_suffix("_ms").unwrap_or(key).replace('_', " ");
    let mut c = key.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

impl Page<'_> {
    /// A staff id as `Name (role, organisation)`; any other value as text. Escaped.
    fn who(&self, v: &Value) -> String {
        let id = text(v);
        let p = &self.people[&id];
        if p.is_object() {
            escape(&format!(
                "{} ({}, {})",
                text(&p["name"]),
                text(&p["role"]).replace('_', " "),
                text(&p["org"])
            ))
        } else {
            escape(&id)
        }
    }

    /// A value as people read it: a staff id named, a time in ms as a UK time, text as text.
    fn value(&self, key: &str, v: &Value) -> String {
        if key.ends_with("_ms") && v.is_i64() {
            return when(v);
        }
        if let Some(s) = v.as_str() {
            if self.people[s].is_object() {
                return self.who(v);
            }
            if s.contains('\n') {
                return format!("<div class=\"text\">{}</div>", escape(s));
            }
            // A code from a vocabulary (`has_capacity`, `social_worker`) as words.
            let code = s.contains('_')
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if code {
                return escape(&s.replace('_', " "));
            }
        }
        escape(&text(v))
    }

    fn header(&self, h: &mut String, record: &Value, person: &str) {
        let case = &record["case"];
        let _ = writeln!(
            h,
            "<h1>Health and social care record of {}</h1>",
            escape(person)
        );
        let _ = writeln!(
            h,
            "<p class=\"meta\">Case <code>{}</code>, held by {}; opened {}. This copy was \
             made {}. Times are UK time (GMT, or BST in summer).</p>",
            escape(&text(&case["case_id"])),
            escape(&text(&case["owner_org"]["name"])),
            when(&case["created_ms"]),
            when(&record["exported_at_ms"])
        );
        h.push_str(
            "<p class=\"warn\">This is the person's whole record and includes restricted sections \
             (such as safeguarding) that most staff may not see. It was produced by an \
             administrator; handle it accordingly. Fields marked for redaction hold information \
             about other people: consider removing them before the record is disclosed.</p>\n",
        );
        h.push_str(
            "<nav><ul><li><a href=\"#person\">The person</a></li><li><a href=\"#plan\">Plan</a></li>\
             <li><a href=\"#notes\">Notes</a></li><li><a href=\"#assessment\">Assessments</a></li>\
             <li><a href=\"#safeguarding\">Safeguarding</a></li><li><a href=\"#discharge\">Discharge</a></li>\
             <li><a href=\"#referral\">Referrals</a></li><li><a href=\"#restricted\">Restricted</a></li>\
             <li><a href=\"#provenance\">Who changed what, and when</a></li></ul></nav>\n",
        );
        h.push_str("<h2>The team around the person</h2>\n<ul>\n");
        for t in case["teams"].as_array().into_iter().flatten() {
            let _ = writeln!(
                h,
                "<li>{} ({})</li>",
                escape(&text(&t["name"])),
                escape(&text(&t["org"]))
            );
        }
        h.push_str("</ul>\n");
    }

    fn documents<'r>(&self, record: &'r Value, kind: &str) -> Vec<&'r Value> {
        record["documents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"] == kind)
            .collect()
    }

    fn person(&self, h: &mut String, record: &Value) {
        h.push_str("<h2 id=\"person\">The person</h2>\n");
        for d in self.documents(record, "case") {
            let c = &d["content"];
            h.push_str("<table>\n");
            for key in ["name", "nhs_number", "dob", "address"] {
                let _ = writeln!(
                    h,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    match key {
                        "nhs_number" => "NHS number".to_string(),
                        "dob" => "Date of birth".to_string(),
                        k => label(k),
                    },
                    self.value(key, &c[key])
                );
            }
            h.push_str("</table>\n<h3>Alerts</h3>\n");
            self.entries(
                h,
                &c["alerts"],
                &[
                    ("text", "Alert"),
                    ("status", "Status"),
                    ("raised_by", "Raised by"),
                    ("raised_at_ms", "Raised"),
                ],
            );
            h.push_str("<h3>About me</h3>\n");
            let _ = writeln!(
                h,
                "<div class=\"text\">{}</div>",
                escape(&text(&c["about_me"]))
            );
            h.push_str("<h3>Legal status</h3>\n");
            self.fields(h, &c["legal_status"], &[]);
            h.push_str("<h3>Contacts</h3>\n");
            self.fields(h, &c["contacts"], &[]);
            h.push_str("<h3>Who is involved</h3>\n");
            self.entries(
                h,
                &c["team"],
                &[
                    ("worker", "Worker"),
                    ("role", "Role"),
                    ("team", "Team"),
                    ("org", "Organisation"),
                ],
            );
            self.conflicts(h, d);
        }
    }

    /// A map of entries keyed by id as a table with the given columns, in a stable order.
    fn entries(&self, h: &mut String, map: &Value, columns: &[(&str, &str)]) {
        let Some(map) = map.as_object().filter(|m| !m.is_empty()) else {
            h.push_str("<p>None recorded.</p>\n");
            return;
        };
        h.push_str("<table><tr>");
        for (_, title) in columns {
            let _ = write!(h, "<th>{title}</th>");
        }
        h.push_str("</tr>\n");
        for entry in map.values() {
            h.push_str("<tr>");
            for (key, _) in columns {
                let _ = write!(h, "<td>{}</td>", self.value(key, &entry[*key]));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }

    /// Every field under `v` as a two-column table, nested maps as labelled paths (entries keyed
    /// by id numbered instead), `third_party` fields flagged for redaction.
    fn fields(&self, h: &mut String, v: &Value, third_party: &[String]) {
        let mut rows: Vec<(String, String, bool)> = Vec::new();
        let mut stack: Vec<(String, &Value, bool)> = vec![(String::new(), v, false)];
        while let Some((path, v, redact)) = stack.pop() {
            match v {
                Value::Object(o) => {
                    let mut children = Vec::new();
                    for (n, (key, child)) in o.iter().enumerate() {
                        if key == "schema" || key == "case_id" {
                            continue;
                        }
                        let name = if uuid::Uuid::parse_str(key).is_ok() {
                            format!("#{}", n + 1)
                        } else {
                            label(key)
                        };
                        let child_path = if path.is_empty() {
                            name
                        } else {
                            format!("{path} › {name}")
                        };
                        let flagged = redact || (path.is_empty() && third_party.contains(key));
                        let shown = if key.ends_with("_ms") || !child.is_object() {
                            self.value(key, child)
                        } else {
                            String::new()
                        };
                        if child.is_object() && !key.ends_with("_ms") {
                            children.push((child_path, child, flagged));
                        } else {
                            rows.push((child_path, shown, flagged));
                        }
                    }
                    stack.extend(children.into_iter().rev());
                }
                other => rows.push((path, self.value("", other), redact)),
            }
        }
        if rows.is_empty() {
            h.push_str("<p>None recorded.</p>\n");
            return;
        }
        h.push_str("<table>\n");
        for (path, value, redact) in rows {
            let (open, close) = if redact {
                (
                    "<div class=\"redact\">Third-party data: consider redacting. ",
                    "</div>",
                )
            } else {
                ("", "")
            };
            let _ = writeln!(
                h,
                "<tr><th>{}</th><td>{open}{value}{close}</td></tr>",
                escape(&path)
            );
        }
        h.push_str("</table>\n");
    }

    fn conflicts(&self, h: &mut String, d: &Value) {
        for c in d["conflicts"].as_array().into_iter().flatten() {
            let path: Vec<String> = c["path"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| label(&text(p)))
                .collect();
            let values: Vec<String> = c["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| escape(&text(v)))
                .collect();
            let _ = writeln!(
                h,
                "<p class=\"warn\">Recorded differently at the same time, not yet settled: {}: {}</p>",
                escape(&path.join(" › ")),
                values.join(" | ")
            );
        }
    }

    fn plans(&self, h: &mut String, record: &Value) {
        h.push_str("<h2 id=\"plan\">Plan</h2>\n");
        for d in self.documents(record, "plan") {
            let c = &d["content"];
            let _ = writeln!(
                h,
                "<div class=\"text\">{}</div>",
                escape(&text(&c["narrative"]))
            );
            h.push_str("<h3>Goals</h3>\n");
            self.entries(h, &c["goals"], &[("what", "Goal"), ("status", "Status")]);
            h.push_str("<h3>Actions</h3>\n");
            self.entries(
                h,
                &c["actions"],
                &[
                    ("what", "Action"),
                    ("who", "Who"),
                    ("by", "By when"),
                    ("status", "Status"),
                ],
            );
            h.push_str("<h3>Discharge and agreement</h3>\n");
            let rest = serde_json::json!({
                "discharge_date": c["discharge_date"],
                "pathway": c["pathway"],
                "agreement": c["agreement"],
            });
            self.fields(h, &rest, &[]);
            self.conflicts(h, d);
        }
    }

    fn notes(&self, h: &mut String, record: &Value) {
        h.push_str("<h2 id=\"notes\">Notes, in the order they happened</h2>\n");
        for m in record["moved_notes"].as_array().into_iter().flatten() {
            let _ = writeln!(
                h,
                "<p class=\"meta moved\">Note moved to another record by {}, {}: {}{}</p>",
                escape(&text(&m["by"])),
                when(&m["at_ms"]),
                escape(&text(&m["category"])),
                m["reason"]
                    .as_str()
                    .map(|r| format!(" ({})", escape(r)))
                    .unwrap_or_default()
            );
        }
        for n in record["notes"].as_array().into_iter().flatten() {
            let id = escape(&text(&n["note_id"]));
            let amendment = n["amends"]["note_id"].is_string();
            let _ = writeln!(
                h,
                "<div class=\"note{}\" id=\"note-{id}\">\n<h3>{} note, {}</h3>",
                if amendment { " amendment" } else { "" },
                escape(&label(&text(&n["note_kind"]))),
                when(&n["occurred_at_ms"])
            );
            let a = &n["author"];
            let _ = writeln!(
                h,
                "<p class=\"meta\">Written by {} ({}, {}; {}). Happened {}; written {} (the \
                 device's clock); {}; first received by the server {}; filing received {}. \
                 Note <code>{id}</code>.</p>",
                self.named(&a["staff_id"]),
                escape(&text(&a["role"]).replace('_', " ")),
                escape(&text(&a["org"])),
                escape(&text(&a["team"])),
                when(&n["occurred_at_ms"]),
                when(&n["recorded_at_ms"]),
                match n["filed_at_ms"].as_i64() {
                    Some(ms) => format!("filed {}", uk_time::when(ms)),
                    None => format!("{} (not filed)", escape(&text(&n["status"]))),
                },
                when(&n["first_received_at_ms"]),
                when(&n["filed_received_at_ms"])
            );
            if !n["late_entry_reason"].is_null() {
                let _ = writeln!(
                    h,
                    "<p>Late entry: {}</p>",
                    escape(&text(&n["late_entry_reason"]))
                );
            }
            if let Some(target) = n["amends"]["note_id"].as_str() {
                let _ = writeln!(
                    h,
                    "<p>This note is a {} of <a href=\"#note-{t}\">note {t}</a>. Reason: {}</p>",
                    escape(&text(&n["amends"]["kind"])),
                    escape(&text(&n["amends"]["reason"])),
                    t = escape(target),
                );
                if n["original"].is_object() {
                    let _ = writeln!(
                        h,
                        "<div class=\"original\"><strong>The original note, as filed:</strong>\
                         <div class=\"text\">{}</div></div>",
                        escape(&text(&n["original"]["text"]))
                    );
                }
            }
            let _ = writeln!(h, "<div class=\"text\">{}</div>", escape(&text(&n["text"])));
            for a in n["amended_by"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    h,
                    "<p>Amended by <a href=\"#note-{aid}\">note {aid}</a> ({}): {}</p>",
                    escape(&text(&a["kind"])),
                    escape(&text(&a["reason"])),
                    aid = escape(&text(&a["note_id"])),
                );
            }
            h.push_str("</div>\n");
        }
    }

    /// A staff id by name only (the role and organisation follow from the note's author block).
    fn named(&self, v: &Value) -> String {
        let p = &self.people[&text(v)];
        if p.is_object() {
            escape(&text(&p["name"]))
        } else {
            escape(&text(v))
        }
    }

    fn documents_of(&self, h: &mut String, record: &Value, kind: &str, title: &str) {
        let _ = writeln!(h, "<h2 id=\"{kind}\">{title}</h2>");
        let docs = self.documents(record, kind);
        if docs.is_empty() {
            h.push_str("<p>None recorded.</p>\n");
        }
        for d in docs {
            let _ = writeln!(
                h,
                "<h3>{} <code>{}</code></h3>\n<p class=\"meta\">Held by {}; created {}.{}</p>",
                escape(&label(kind)),
                escape(&text(&d["doc_id"])),
                escape(&text(&d["owner_org"]["name"])),
                when(&d["created_ms"]),
                match d["access_teams"].as_array() {
                    Some(list) => format!(
                        " Restricted: visible only to {}.",
                        list.iter()
                            .map(|t| escape(&text(&t["name"])))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => String::new(),
                }
            );
            let third: Vec<String> = d["third_party"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            self.fields(h, &d["content"], &third);
            self.conflicts(h, d);
        }
    }

    fn provenance(&self, h: &mut String, record: &Value) {
        h.push_str(
            "<h2 id=\"provenance\">Who changed what, and when</h2>\n<p>Every change to every part \
             of the record, in the order the server received it: who made it (name, role, \
             organisation), on which device, when the device says it was made and when the \
             server received it.</p>\n",
        );
        for d in record["documents"].as_array().into_iter().flatten() {
            let _ = writeln!(
                h,
                "<h3>{} <code>{}</code></h3>\n<table><tr><th>#</th><th>Who</th><th>Role</th>\
                 <th>Organisation</th><th>Made (device clock)</th><th>Received by the server</th>\
                 <th>Device</th><th>Change</th></tr>",
                escape(&label(&text(&d["kind"]))),
                escape(&text(&d["doc_id"]))
            );
            for c in d["history"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td><small>{}</small></td><td><small>{}</small></td></tr>",
                    escape(&text(&c["seq"])),
                    escape(&text(&c["staff_name"])),
                    escape(&text(&c["role"]).replace('_', " ")),
                    escape(&text(&c["org"])),
                    when(&c["device_time_ms"]),
                    when(&c["received_at_ms"]),
                    escape(&text(&c["device_id"])),
                    escape(&text(&c["hash"]).chars().take(12).collect::<String>())
                );
            }
            h.push_str("</table>\n");
        }
    }
}
