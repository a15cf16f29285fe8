//! `GET /metrics` through real processes: a real server, CLI devices that sync, a change the
//! server refuses (and quarantines), a refused token and an open live connection; the scrape
//! must count each by the right amount, and name nobody (no note text, names, tokens or ids).

mod common;
use automerge::{AutoCommit, ObjType};
use casenote_protocol::wire::DocPush;
use casenote_protocol::{DocId, DocKind, ErrorCode, Seq};
use common::craft::{craft, push_of};
use common::*;
use std::collections::HashMap;
use std::net::TcpStream;
use std::time::Duration;

/// A scrape: each sample line's `name{labels}` and its value.
fn scrape(server: &Server) -> (String, HashMap<String, f64>) {
    let resp = ureq::get(&format!("{}/metrics", server.url))
        .call()
        .expect("/metrics answers 200");
    let kind = resp.content_type().to_string();
    assert!(
        kind.contains("text/plain") || kind.contains("openmetrics-text"),
        "content type {kind}"
    );
    let text = resp.into_string().unwrap();
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("`name value`");
            (name.to_string(), value.parse::<f64>().expect("a number"))
        })
        .collect();
    (text, samples)
}

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

/// How much `name` moved between two scrapes.
fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, name: &str) -> f64 {
    value(after, name) - value(before, name)
}

/// Opens the live channel as `token`.
fn live(server: &Server, token: &str) -> tungstenite::WebSocket<TcpStream> {
    use tungstenite::client::IntoClientRequest;
    let addr = server.addr();
    let mut req = format!("ws://{addr}/v1/live")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    tungstenite::client::client(req, stream)
        .expect("the live channel opens")
        .0
}

#[test]
fn a_scrape_counts_syncs_changes_refusals_quarantines_and_live_connections_and_names_nobody() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let priya_token = token_of(&staff, "Priya Shah");
    let priya = Cli::login(tmp.path().join("priya"), &server, &priya_token);
    let mark = device(&tmp, &server, &staff, "mark", "Mark Ellison");
    let priya_id = raw::staff_id(&server.url, &priya_token);
    let (_, before) = scrape(&server);

    // Priya writes and syncs; Mark, on her team, pulls it.
    let case = priya.ok(&["case", "new", "--name", "Metric Person"]);
    let note_text = "Visited at home; the kitchen was tidy.";
    let note = priya.ok(&["note", "add", &case, "--text", note_text]);
    let up = priya.sync();
    let down = mark.sync();
    // A new note nested 500 maps deep: refused (rule_violation) and its change quarantined.
    let mut doc = AutoCommit::new();
    let changes = craft(&mut doc, priya_id, |d| {
        let mut obj = automerge::transaction::Transactable::put_object(
            d,
            automerge::ROOT,
            "nested",
            ObjType::Map,
        )
        .unwrap();
        for _ in 1..500 {
            obj = automerge::transaction::Transactable::put_object(d, &obj, "m", ObjType::Map)
                .unwrap();
        }
    });
    let bad_doc = DocId::new_random();
    let push: DocPush = push_of(bad_doc, case.parse().unwrap(), DocKind::Note, &[], &changes);
    let refused = raw::sync(&server.url, &priya_token, Seq(0), vec![push]).expect("a 200 answer");
    assert_eq!(refused.rejections.len(), 1, "{refused:?}");
    assert_eq!(refused.rejections[0].code, ErrorCode::RuleViolation);
    let raw_pulled: usize = refused.docs.iter().map(|d| d.changes.len()).sum();
    // A token the server does not know: 401 unauthorized.
    let wrong = ureq::get(&format!("{}/v1/whoami", server.url))
        .set("authorization", "Bearer cn_not-a-token")
        .call();
    assert!(
        matches!(wrong, Err(ureq::Error::Status(401, _))),
        "{wrong:?}"
    );
    // A live connection, open while the server is scraped.
    let _live = live(&server, &priya_token);

    let (text, after) = scrape(&server);
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    let syncs = (n(&up, "requests") + n(&down, "requests") + 1) as f64;
    let sync_200 = r#"casenote_http_requests_total{route="/v1/sync",status="200"}"#;
    assert_eq!(moved(&before, &after, sync_200), syncs, "sync requests");
    for sample in [
        r#"casenote_http_request_duration_seconds_count{route="/v1/sync"}"#,
        r#"casenote_http_request_duration_seconds_bucket{le="+Inf",route="/v1/sync"}"#,
    ] {
        assert_eq!(moved(&before, &after, sample), syncs, "{sample}");
    }
    assert!(
        moved(
            &before,
            &after,
            r#"casenote_http_request_duration_seconds_sum{route="/v1/sync"}"#
        ) > 0.0
    );
    assert_eq!(
        moved(&before, &after, "casenote_sync_changes_stored_total"),
        n(&up, "changes_stored") as f64,
        "changes stored: {up}"
    );
    assert!(n(&up, "changes_stored") > 0);
    assert_eq!(
        moved(&before, &after, "casenote_sync_changes_pulled_total"),
        (n(&up, "changes_down") + n(&down, "changes_down")) as f64 + raw_pulled as f64,
        "changes pulled: {down}"
    );
    assert!(n(&down, "changes_down") > 0);
    let rule = r#"casenote_sync_rejections_total{code="rule_violation"}"#;
    assert_eq!(moved(&before, &after, rule), 1.0, "rejections");
    assert_eq!(
        moved(&before, &after, "casenote_quarantined_changes_total"),
        changes.len() as f64,
        "quarantined changes"
    );
    let unauthorized = r#"casenote_refusals_total{code="unauthorized"}"#;
    assert_eq!(moved(&before, &after, unauthorized), 1.0, "refusals");
    assert_eq!(value(&after, "casenote_live_connections"), 1.0);
    // Every sync that stored something flushed; each flush served at least one request.
    let flushes = moved(
        &before,
        &after,
        "casenote_store_flush_duration_seconds_count",
    );
    assert!(flushes >= 1.0, "no flush counted");
    let shared = "casenote_store_flush_requests";
    assert_eq!(moved(&before, &after, &format!("{shared}_count")), flushes);
    assert!(moved(&before, &after, &format!("{shared}_sum")) >= flushes);
    assert!(value(&after, "casenote_store_size_bytes") > 0.0);

    // Nobody is named: no token, name, note text or id a device chose.
    let devices = [
        priya.json(&["whoami", "--json"]),
        mark.json(&["whoami", "--json"]),
    ];
    let mut secret = vec![
        priya_token.clone(),
        note_text.to_string(),
        "Metric Person".into(),
        case.clone(),
        note.clone(),
        bad_doc.to_string(),
        priya_id.to_string(),
    ];
    for s in &staff {
        secret.push(s.name.clone());
        secret.push(s.token.clone());
    }
    for d in &devices {
        secret.push(d["device_id"].as_str().unwrap().to_string());
    }
    for s in &secret {
        assert!(!text.contains(s.as_str()), "the scrape holds {s:?}");
    }
}
