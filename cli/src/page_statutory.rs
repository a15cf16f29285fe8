//! The statutory sections of the `show` page: assessments, discharges, referrals, safeguarding
//! enquiries, legal status and contacts.
//!
//! Each document is rendered through its table (`casenote_protocol::record::schema`), so the
//! page walks only fields the schema names, in the schema's order, with an explicit stack (no
//! recursion over what a device wrote). A field written differently at the same time shows every
//! value, marked as disputed.

use casenote_protocol::record::schema::{self, Field, Node};
use serde_json::Value;
use std::fmt::Write;

fn label(key: &str) -> String {
    key.replace('_', " ")
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The values of a conflict on `path` of document `doc`, if there is one.
fn disputed(show: &Value, doc: &Value, path: &[String]) -> Option<Vec<String>> {
    show["conflicts"].as_array()?.iter().find_map(|c| {
        let p: Vec<&str> = c["path"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        (c["doc_id"] == *doc && p == path).then(|| {
            c["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect()
        })
    })
}

/// Renders one document's content through its table's fields.
fn render(out: &mut String, show: &Value, doc: &Value, fields: &[&'static [Field]]) {
    let content = &doc["content"];
    let mut stack: Vec<(&Value, &'static [Field], Vec<String>)> = fields
        .iter()
        .rev()
        .map(|f| (content, *f, Vec::new()))
        .collect();
    while let Some((obj, fields, path)) = stack.pop() {
        let indent = "  ".repeat(path.len() + 1);
        let mut deeper = Vec::new();
        for (key, node) in fields {
            let mut here = path.clone();
            here.push(key.to_string());
            let v = &obj[*key];
            match node {
                Node::V(_) => {
                    if let Some(values) = disputed(show, &doc["doc_id"], &here) {
                        let _ = writeln!(
                            out,
                            "{indent}{}: DISPUTED: {}",
                            label(key),
                            values.join(" | ")
                        );
                    } else if let Some(s) = scalar(v) {
                        if s.contains('\n') {
                            let _ = writeln!(out, "{indent}{}:", label(key));
                            for line in s.lines() {
                                let _ = writeln!(out, "{indent}  {line}");
                            }
                        } else {
                            let _ = writeln!(out, "{indent}{}: {s}", label(key));
                        }
                    }
                }
                Node::Map(sub) if v.is_object() => {
                    // Rendered after this level, under its own heading.
                    deeper.push((v, *sub, here));
                }
                Node::Entries(spec) => {
                    for (_, e) in v.as_object().into_iter().flatten() {
                        let parts: Vec<String> = spec
                            .iter()
                            .filter_map(|(k, _)| {
                                scalar(&e[*k]).map(|s| format!("{}: {s}", label(k)))
                            })
                            .collect();
                        let _ = writeln!(out, "{indent}- {}: {}", label(key), parts.join("; "));
                    }
                }
                _ => {}
            }
        }
        for (v, sub, here) in deeper.into_iter().rev() {
            let filled = v.as_object().is_some_and(|o| {
                o.values()
                    .any(|x| scalar(x).is_some() || x.as_object().is_some_and(|o| !o.is_empty()))
            });
            if filled {
                stack.push((v, sub, here.clone()));
                stack.push((&Value::Null, &[], here));
            }
        }
        if fields.is_empty() {
            if let Some(last) = path.last() {
                let indent = "  ".repeat(path.len());
                let _ = writeln!(out, "{indent}{}:", label(last));
            }
        }
    }
}

/// The assessments, discharges, referrals and safeguarding enquiries of a case.
pub fn sections(out: &mut String, show: &Value) {
    for a in show["assessments"].as_array().into_iter().flatten() {
        let c = &a["content"];
        let ty = c["type"].as_str().unwrap_or("?");
        let status = c["status"].as_str().unwrap_or("?");
        let _ = writeln!(
            out,
            "\nAssessment: {} ({}; document {})",
            label(ty),
            label(status),
            a["doc_id"].as_str().unwrap_or("?")
        );
        let amended: Vec<&str> = a["amended_by"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !amended.is_empty() {
            let _ = writeln!(out, "  amended by {}", amended.join(", "));
        }
        let t = schema::assessment_table(Some(ty));
        let own = [t.parts[2]];
        render(out, show, a, &own);
        if c["amends"].is_object() {
            let am = &c["amends"];
            let _ = writeln!(
                out,
                "  amends {} ({}): {}",
                am["assessment_id"].as_str().unwrap_or("?"),
                am["kind"].as_str().unwrap_or("?"),
                am["reason"].as_str().unwrap_or("")
            );
        }
    }
    let kinds: [(&str, &str, &'static [Field]); 3] = [
        ("discharges", "Discharge", schema::DISCHARGE),
        ("referrals", "Referral", schema::REFERRAL),
        (
            "safeguarding",
            "Safeguarding enquiry (restricted)",
            schema::SAFEGUARDING,
        ),
    ];
    for (key, title, fields) in kinds {
        for d in show[key].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "\n{title} (document {})",
                d["doc_id"].as_str().unwrap_or("?")
            );
            render(out, show, d, &[fields]);
        }
    }
}

/// The legal status and contacts lines of the person's identity.
pub fn legal_and_contacts(out: &mut String, show: &Value) {
    let r = &show["record"];
    for (key, v) in r["legal_status"].as_object().into_iter().flatten() {
        match v {
            Value::Object(_) => {
                let mut line = format!(
                    "  Legal status: {}",
                    label(v["kind"].as_str().unwrap_or("?"))
                );
                for (k, what) in [
                    ("detail", " "),
                    ("scope", ", "),
                    ("start", ", from "),
                    ("end", ", until "),
                ] {
                    if let Some(s) = scalar(&v[k]) {
                        let _ = write!(line, "{what}{}", if k == "scope" { label(&s) } else { s });
                    }
                }
                if let Some(s) = scalar(&v["status"]) {
                    let _ = write!(line, " ({s})");
                }
                let _ = writeln!(out, "{line} [{key}]");
            }
            other => {
                let _ = writeln!(
                    out,
                    "  Legal status, {}: {}",
                    label(key),
                    scalar(other).unwrap_or_default()
                );
            }
        }
    }
    let contacts: Vec<&Value> = r["contacts"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, v)| v)
        .collect();
    if contacts.is_empty() {
        return;
    }
    let _ = writeln!(out, "  Contacts");
    for c in contacts {
        let mut line = format!(
            "    - {}: {}",
            label(c["role"].as_str().unwrap_or("?")),
            c["name"].as_str().unwrap_or("?")
        );
        for (k, what) in [
            ("relationship", ", "),
            ("phone", ", "),
            ("may_decide", ", may decide: "),
            ("notes", "; "),
        ] {
            if let Some(s) = scalar(&c[k]) {
                let _ = write!(line, "{what}{}", label(&s));
            }
        }
        let _ = writeln!(out, "{line}");
    }
}
