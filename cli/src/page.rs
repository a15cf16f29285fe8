//! The human views of a case: `show` as a page a worker reads before knocking on the door, and
//! `conflicts` with who wrote each value.
//!
//! Both render the JSON `Device::show` returns (the machine view `show --json` prints), so the
//! two can never disagree. The page puts what matters for safety first: active alerts, then who
//! the person is, the discharge date and pathway, the team around them, the plan (whether it was
//! agreed with the person, and changed since), then the notes, newest first, each with who wrote
//! it and the amendments that point at it. People are named as far as the device knows them
//! (`people` in the JSON); a staff member it knows nothing of is shown by staff id.

use casenote_protocol::record::field;
use serde_json::Value;
use std::fmt::Write;

/// `n thing` or `n things`.
pub fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// A time in ms since the epoch, for people: `2026-12-02 10:04 UTC`.
pub fn when(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} {} UTC", &s[..10], &s[11..16])
}

/// A length of time for people, to the largest whole unit: `40 seconds`, `3 minutes`,
/// `13 hours`, `2 days`.
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        s if s >= 2 * 86_400 => count((s / 86_400) as usize, "day"),
        s if s >= 2 * 3_600 => count((s / 3_600) as usize, "hour"),
        s if s >= 2 * 60 => count((s / 60) as usize, "minute"),
        s => count(s as usize, "second"),
    }
}

/// The warning a device prints above what it shows when its records are old (`freshness`, as
/// `Device::freshness` gives it), or nothing.
pub fn stale_warning(freshness: &Value) -> Option<String> {
    if freshness["stale"].as_bool() != Some(true) {
        return None;
    }
    Some(match freshness["age_ms"].as_i64() {
        Some(a) => format!(
            "WARNING: this device last synced {} ago: what it shows may be out of date (sync \
             to bring it up to date)",
            age(a)
        ),
        None => "WARNING: this device has never synced: it may not hold the whole record".into(),
    })
}

/// A role as the directory spells it (`occupational_therapist`), for people.
fn role(r: &str) -> String {
    r.replace('_', " ")
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v[key].as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// Who a staff id is, as far as `people` knows: a name, else role, team and organisation, else
/// the id.
pub fn who(people: &Value, staff_id: &str) -> String {
    let p = &people[staff_id];
    let role = text(p, "role").map(role);
    let mut about: Vec<String> = role.into_iter().collect();
    about.extend(text(p, "team").map(str::to_string));
    let org = text(p, "org").map(|o| format!("({o})"));
    let about = [about.join(", "), org.unwrap_or_default()]
        .join(" ")
        .trim()
        .to_string();
    match (text(p, "name"), about.is_empty()) {
        (Some(name), true) => name.to_string(),
        (Some(name), false) => format!("{name}, {about}"),
        (None, false) => format!("staff {staff_id} ({about})"),
        (None, true) => format!("staff {staff_id}"),
    }
}

/// A value as people read it: a string without its quotes.
fn shown(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// Every line of `text`, indented.
fn indented(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}{line}");
    }
}

/// The entries of a map keyed by id, in a stable order.
fn entries(map: &Value) -> Vec<(&String, &Value)> {
    let mut v: Vec<_> = map.as_object().into_iter().flatten().collect();
    v.sort_by_key(|(id, _)| *id);
    v
}

/// Whether `path` is among the case's conflicts.
fn disputed(show: &Value, path: &[&str]) -> Option<Vec<String>> {
    show["conflicts"].as_array()?.iter().find_map(|c| {
        let p: Vec<&str> = c["path"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        (p == path).then(|| {
            c["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(shown)
                .collect()
        })
    })
}

/// The page `show` prints.
///
/// When the CLI adds `seen` (`now_ms`, this device's clock, and `freshness`), the page opens with
/// a warning if the device's records are old, and gives each alert's age.
pub fn case_page(show: &Value) -> String {
    let mut out = String::new();
    if let Some(warning) = stale_warning(&show["seen"]["freshness"]) {
        let _ = writeln!(out, "{warning}\n");
    }
    alerts(&mut out, show);
    identity(&mut out, show);
    discharge(&mut out, show);
    team(&mut out, show);
    for plan in show["plans"].as_array().into_iter().flatten() {
        plan_section(&mut out, show, plan);
    }
    for r in show["restricted"].as_array().into_iter().flatten() {
        let c = &r["content"];
        let title = text(c, "title").unwrap_or("restricted section");
        let _ = writeln!(out, "\nRestricted: {title}");
        indented(&mut out, "  ", text(c, field::NARRATIVE).unwrap_or(""));
    }
    crate::page_statutory::sections(&mut out, show);
    sealed(&mut out, show);
    damaged(&mut out, show);
    notes(&mut out, show);
    moved_notes(&mut out, show);
    let conflicts = show["conflicts"].as_array().map_or(0, Vec::len);
    if conflicts > 0 {
        let _ = writeln!(
            out,
            "\n{} (written differently at the same time): see `casenote conflicts {}`",
            count(conflicts, "conflicting field"),
            shown(&show["case_id"])
        );
    }
    out
}

fn alerts(out: &mut String, show: &Value) {
    let people = &show["people"];
    let mut active = Vec::new();
    let mut resolved = 0;
    for (id, a) in entries(&show["record"][field::ALERTS]) {
        let dispute = disputed(show, &[field::ALERTS, id, field::STATUS]);
        if text(a, field::STATUS) == Some("active") || dispute.is_some() {
            let by = text(a, field::RAISED_BY).map(|s| who(people, s));
            let mut line = format!("  ! {}", text(a, "text").unwrap_or("(no text)"));
            let now = show["seen"]["now_ms"].as_i64();
            let raised = a[field::RAISED_AT].as_i64();
            match (by, raised, now) {
                (Some(by), Some(at), Some(now)) => {
                    let _ = write!(line, " (raised by {by}, {} ago)", age(now - at));
                }
                (Some(by), _, _) => {
                    let _ = write!(line, " (raised by {by})");
                }
                (None, Some(at), Some(now)) => {
                    let _ = write!(line, " (raised {} ago)", age(now - at));
                }
                (None, _, _) => {}
            }
            if let Some(values) = dispute {
                let _ = write!(line, "; status disputed: {}", values.join(" | "));
            }
            active.push(line);
        } else {
            resolved += 1;
        }
    }
    if active.is_empty() {
        out.push_str("No active alerts.\n");
    } else {
        let _ = writeln!(out, "ALERTS");
        for line in active {
            let _ = writeln!(out, "{line}");
        }
    }
    if resolved > 0 {
        let _ = writeln!(out, "  ({} not shown)", count(resolved, "resolved alert"));
    }
}

fn identity(out: &mut String, show: &Value) {
    let r = &show["record"];
    let _ = writeln!(out, "\n{}", text(r, field::NAME).unwrap_or("(no name)"));
    let mut facts = Vec::new();
    if let Some(n) = text(r, field::NHS_NUMBER) {
        facts.push(format!("NHS number {n}"));
    }
    if let Some(d) = text(r, field::DOB) {
        facts.push(format!("born {d}"));
    }
    if !facts.is_empty() {
        let _ = writeln!(out, "  {}", facts.join(", "));
    }
    if let Some(a) = text(r, field::ADDRESS) {
        let _ = writeln!(out, "  {a}");
    }
    crate::page_statutory::legal_and_contacts(out, show);
    let _ = writeln!(out, "  case {}", shown(&show["case_id"]));
    if let Some(about) = text(r, field::ABOUT_ME) {
        let _ = writeln!(out, "\nAbout me");
        indented(out, "  ", about);
    }
}

fn discharge(out: &mut String, show: &Value) {
    for plan in show["plans"].as_array().into_iter().flatten() {
        let c = &plan["content"];
        let date = text(c, field::DISCHARGE_DATE).unwrap_or("no date set");
        let pathway =
            text(c, field::PATHWAY).map_or("no pathway set".into(), |p| format!("pathway {p}"));
        let _ = writeln!(out, "\nDischarge: {date}, {pathway}");
    }
}

fn team(out: &mut String, show: &Value) {
    let members = entries(&show["record"][field::TEAM]);
    if members.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nTeam around the person");
    for (_, m) in members {
        let mut about: Vec<String> = Vec::new();
        about.extend(text(m, field::WORKER).map(str::to_string));
        about.extend(text(m, field::ROLE).map(role));
        about.extend(text(m, field::TEAM).map(str::to_string));
        let org = text(m, field::ORG)
            .map(|o| format!(" ({o})"))
            .unwrap_or_default();
        let _ = writeln!(out, "  - {}{org}", about.join(", "));
    }
}

fn plan_section(out: &mut String, show: &Value, plan: &Value) {
    let people = &show["people"];
    let c = &plan["content"];
    let _ = writeln!(out, "\nPlan (document {})", shown(&plan["doc_id"]));
    let a = &plan["agreement"];
    if a.is_object() {
        let by = text(a, "by")
            .map(|b| who(people, b))
            .unwrap_or_else(|| "?".into());
        let at = a["at_ms"].as_i64().map(when).unwrap_or_else(|| "?".into());
        let since = if a["changed_since_agreed"] == true {
            "; changed since it was agreed"
        } else {
            "; unchanged since"
        };
        let with = text(a, "with").unwrap_or("?");
        let _ = writeln!(out, "  Agreed with {with} on {at} by {by}{since}");
    } else {
        let _ = writeln!(out, "  Not agreed with the person yet.");
    }
    indented(out, "  ", text(c, field::NARRATIVE).unwrap_or(""));
    let goals = entries(&c[field::GOALS]);
    if !goals.is_empty() {
        let _ = writeln!(out, "  Goals");
        for (id, g) in goals {
            let status = text(g, field::STATUS).unwrap_or("?");
            let _ = writeln!(
                out,
                "    [{status}] {} (goal {id})",
                text(g, "text").unwrap_or("")
            );
        }
    }
    let actions = entries(&c[field::ACTIONS]);
    if !actions.is_empty() {
        let _ = writeln!(out, "  Actions");
        for (id, act) in actions {
            let status = text(act, field::STATUS).unwrap_or("?");
            let mut line = format!("    [{status}] {}", text(act, field::WHAT).unwrap_or(""));
            if let Some(w) = text(act, field::WHO) {
                let _ = write!(line, "; who: {w}");
            }
            // `by_when`: the spelling of actions the demo wrote before there was one spelling.
            if let Some(by) = text(act, field::BY).or_else(|| text(act, "by_when")) {
                let _ = write!(line, "; by {by}");
            }
            let _ = writeln!(out, "{line} (action {id})");
        }
    }
}

fn notes(out: &mut String, show: &Value) {
    let people = &show["people"];
    let notes: Vec<&Value> = show["notes"].as_array().into_iter().flatten().collect();
    if notes.is_empty() {
        let _ = writeln!(out, "\nNo notes yet.");
        return;
    }
    let _ = writeln!(out, "\nNotes ({}, newest first)", notes.len());
    for n in notes.iter().rev() {
        let c = &n["content"];
        let id = shown(&n["note_id"]);
        let at = c[field::OCCURRED_AT]
            .as_i64()
            .map(when)
            .unwrap_or_else(|| "?".into());
        let author = text(&c[field::AUTHOR], field::STAFF_ID)
            .map(|s| who(people, s))
            .unwrap_or_else(|| "unknown author".into());
        let kind = text(c, field::NOTE_KIND).unwrap_or("note");
        let status = text(c, field::STATUS).unwrap_or("filed");
        let _ = writeln!(out, "\n  {at}, {kind}, {status}, by {author} (note {id})");
        let amends = &c[field::AMENDS];
        if let Some(original) = text(amends, "note_id") {
            let verb = if text(amends, "kind") == Some("correction") {
                "corrects"
            } else {
                "adds to"
            };
            let reason = text(amends, "reason").unwrap_or("");
            let _ = writeln!(out, "    {verb} note {original}: {reason}");
        }
        if let Some(late) = text(c, field::LATE_ENTRY_REASON) {
            let _ = writeln!(out, "    late entry: {late}");
        }
        indented(out, "    ", text(c, field::TEXT).unwrap_or(""));
        for by in n["amended_by"].as_array().into_iter().flatten().map(shown) {
            let amendment = notes.iter().find(|o| shown(&o["note_id"]) == by);
            let a = amendment.map(|o| &o["content"][field::AMENDS]);
            let verb = match a.and_then(|a| text(a, "kind")) {
                Some("correction") => "corrected by",
                _ => "added to by",
            };
            let reason = a.and_then(|a| text(a, "reason")).unwrap_or("");
            let _ = writeln!(out, "    {verb} note {by}: {reason}");
        }
    }
}

/// The stubs of notes moved to another person's record (misfiled), oldest first: who moved
/// each, when and why; nothing of the note.
fn moved_notes(out: &mut String, show: &Value) {
    let mut stubs: Vec<&Value> = entries(&show["record"][field::MOVED_NOTES])
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    stubs.sort_by_key(|v| v["at_ms"].as_i64());
    for s in stubs {
        let at = s["at_ms"].as_i64().map(when).unwrap_or_else(|| "?".into());
        let by = text(s, "by").unwrap_or("an administrator");
        let category = text(s, "category").unwrap_or("other");
        let _ = writeln!(
            out,
            "\n  Note moved to another record by {by}, {at}: {category}"
        );
        if let Some(reason) = text(s, "reason") {
            let _ = writeln!(out, "    {reason}");
        }
    }
}

/// The lines `conflicts` prints: each field, each value with who wrote it and when (the
/// writer's device clock), and how to settle it.
pub fn conflicts(show: &Value) -> String {
    let people = &show["people"];
    let mut out = String::new();
    let found = show["conflicts"].as_array().cloned().unwrap_or_default();
    if found.is_empty() {
        return "no conflicts\n".into();
    }
    for c in &found {
        let path: Vec<String> = c["path"]
            .as_array()
            .into_iter()
            .flatten()
            .map(shown)
            .collect();
        let path = path.join(".");
        let _ = writeln!(
            out,
            "{path} in {} {}:",
            shown(&c["kind"]),
            shown(&c["doc_id"])
        );
        let writers = c["written_by"].as_array().cloned().unwrap_or_default();
        for (i, v) in c["values"].as_array().into_iter().flatten().enumerate() {
            let w = writers.get(i).unwrap_or(&Value::Null);
            let by = text(w, "staff_id").map_or("an unknown writer".into(), |s| who(people, s));
            let at = w["device_time_ms"].as_i64().filter(|t| *t > 0).map(when);
            let at = at
                .map(|t| format!(", at {t} by their device's clock"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {} ({by}{at})", shown(v));
        }
        let _ = writeln!(
            out,
            "  settle it: casenote resolve {} --field {path} --value VALUE",
            shown(&show["case_id"])
        );
    }
    out
}

/// The documents of the case this device holds but cannot read (its store found them damaged).
fn damaged(out: &mut String, show: &Value) {
    for d in show["damaged"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "\nDamaged on this device: {} {}\n  it cannot be shown here; other devices and the server hold it",
            d["kind"].as_str().unwrap_or("document"),
            d["doc_id"].as_str().unwrap_or(""),
        );
    }
}

/// The sealed sections this device may not read: that each exists and whom to ask.
fn sealed(out: &mut String, show: &Value) {
    for s in show["sealed"].as_array().into_iter().flatten() {
        let ask = &s["ask"];
        let name = ask["name"].as_str().unwrap_or("");
        let role = ask["role"].as_str().unwrap_or("");
        let team = ask["team"].as_str().unwrap_or("");
        let _ = writeln!(
            out,
            "\nSealed section: {}, created {}, ask {name} ({role}), {team}\n  {}: its content is not on this device; in an emergency, `casenote break-glass --doc {}`",
            s["kind"].as_str().unwrap_or("restricted"),
            when(s["created_ms"].as_i64().unwrap_or(0)),
            s["doc_id"].as_str().unwrap_or(""),
            s["doc_id"].as_str().unwrap_or(""),
        );
    }
}
