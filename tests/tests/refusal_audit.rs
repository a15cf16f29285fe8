//! Refusals are audited in bounded size and repeated ones are counted, not written one by one
//! (issue 11): a flood of unauthenticated requests with long paths, or a revoked device that keeps
//! trying, leaves a few small entries that carry no text the peer chose, and the chain verifies.

mod common;
use common::*;
use serde_json::Value;

/// The refusals an audit entry stands for: 1, or the count of an aggregated entry.
fn refusals_in(entry: &Value) -> u64 {
    entry["details"]["repeated"].as_u64().unwrap_or(1)
}

/// The size of every file under `dir`.
fn bytes_under(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                bytes_under(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[test]
fn a_flood_of_refused_requests_with_long_paths_leaves_a_few_small_audit_entries() {
    const FLOOD: u64 = 2_000;
    const REVOKED_TRIES: u64 = 50;
    let (_tmp, data, staff) = demo_borough();
    // A revoked device that keeps trying.
    let issued: Value = serde_json::from_str(&admin(
        &data,
        &["token", "issue", "--staff", "Priya Shah", "--json"],
    ))
    .unwrap();
    let revoked = issued["token"].as_str().unwrap().to_string();
    let device_id = issued["device_id"].as_str().unwrap().to_string();
    admin(&data, &["token", "revoke", "--device", &device_id]);
    let before = audit_entries(&data);
    let disk_before = bytes_under(&data);
    let server = Server::start(&data);

    // 16 KB paths of text the peer chose, on a route that needs a token, sent without one.
    let marker = "peer-chosen-text-";
    let path = format!("/v1/history/{}", marker.repeat(16 * 1024 / marker.len()));
    let agent = ureq::AgentBuilder::new().build();
    for _ in 0..FLOOD {
        match agent.get(&format!("{}{path}", server.url)).call() {
            Err(ureq::Error::Status(401, _)) => {}
            other => panic!(
                "an unauthenticated request was not refused with 401: {:?}",
                other.map(|r| r.status()).map_err(|e| e.kind())
            ),
        }
    }
    for _ in 0..REVOKED_TRIES {
        match agent
            .get(&format!("{}{path}", server.url))
            .set("authorization", &format!("Bearer {revoked}"))
            .call()
        {
            Err(ureq::Error::Status(401, _)) => {}
            other => panic!(
                "a revoked device was not refused with 401: {:?}",
                other.map(|r| r.status()).map_err(|e| e.kind())
            ),
        }
    }
    // Anyone else is still served.
    let token = token_of(&staff, "Mark Ellison");
    let whoami = agent
        .get(&format!("{}/v1/whoami", server.url))
        .set("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(whoami.status(), 200);
    let exit = server.stop();

    let disk_after = bytes_under(&data);
    let after = audit_entries(&data);
    let new = &after[before.len()..];
    let refused: Vec<&Value> = new.iter().filter(|e| e["kind"] == "refused").collect();
    let bytes: usize = refused.iter().map(|e| e.to_string().len()).sum();
    eprintln!(
        "{} refusals wrote {} audit entries, {bytes} bytes of JSON; the data directory grew by {} bytes",
        FLOOD + REVOKED_TRIES,
        refused.len(),
        disk_after as i64 - disk_before as i64
    );
    for e in &refused {
        let text = e.to_string();
        assert!(
            !text.contains(marker) && !text.contains("/v1/history/peer"),
            "an audit entry carries text the peer chose ({} bytes): {:.200}",
            text.len(),
            text
        );
    }
    let unauthenticated: Vec<&&Value> = refused
        .iter()
        .filter(|e| e["details"]["code"] == "unauthorized" && e["device_id"].is_null())
        .collect();
    assert_eq!(
        unauthenticated.iter().map(|e| refusals_in(e)).sum::<u64>(),
        FLOOD,
        "every unauthenticated refusal is counted"
    );
    let by_revoked: Vec<&&Value> = refused
        .iter()
        .filter(|e| e["details"]["code"] == "device_revoked" && e["device_id"] == device_id)
        .collect();
    assert_eq!(
        by_revoked.iter().map(|e| refusals_in(e)).sum::<u64>(),
        REVOKED_TRIES,
        "every refusal of the revoked device is counted, under its id"
    );
    assert!(
        unauthenticated.len() <= 4 && by_revoked.len() <= 4,
        "repeated refusals were not aggregated: {} and {} entries",
        unauthenticated.len(),
        by_revoked.len()
    );
    assert!(
        refused.iter().all(|e| e.to_string().len() < 1024),
        "a refusal entry is over 1 KiB"
    );
    let verified = server_cmd(&["audit", "verify", "--data", data.to_str().unwrap()]);
    assert!(!verified.is_empty());
    assert!(
        exit.success(),
        "the server did not stop cleanly on SIGTERM: {exit}"
    );
}
