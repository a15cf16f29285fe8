//! `casenote-server migrate --data DIR --postgres URL`: a sled store moved to PostgreSQL with its
//! log (same sequences, received times and chain), directory, device state, quarantine, audit
//! chain and escrow; `audit verify` and `verify` pass on the database after, and devices carry
//! on against a server on it without starting over.

mod common;
use common::*;
use std::process::Command;

fn migrate(data: &std::path::Path, url: &str) -> std::process::Output {
    Command::new(SERVER_BIN)
        .args([
            "migrate",
            "--data",
            data.to_str().unwrap(),
            "--postgres",
            url,
        ])
        .output()
        .expect("run casenote-server migrate")
}

#[test]
fn a_sled_store_moved_to_postgres_keeps_everything_and_devices_carry_on() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let out = server_cmd(&["demo", "--data", data.to_str().unwrap(), "--json"]);
    let demo: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = |name: &str| {
        demo["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["staff"] == name)
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let server = Server::start_with(&data, "127.0.0.1:0", &[]);
    let priya = Cli::login(tmp.path().join("priya"), &server, &token("Priya Shah"));
    let mark = Cli::login(tmp.path().join("mark"), &server, &token("Mark Ellison"));
    let case = priya.ok(&["case", "new", "--name", "Moved Person"]);
    priya.ok(&["plan", "append", &case, "--text", "Before the move."]);
    priya.sync();
    mark.sync();
    let before = mark.show(&case);
    let history_before = mark.json(&["history", &case, "--json"]);
    let cursor_before = mark.json(&["status", "--json"])["cursor"].clone();
    let addr = server.addr();
    drop(server);
    let sled_audit = server_cmd(&["audit", "show", "--data", data.to_str().unwrap(), "--json"]);

    let url = pg::fresh_database();
    let moved = migrate(&data, &url);
    assert!(
        moved.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&moved.stderr)
    );
    let said = String::from_utf8_lossy(&moved.stdout);
    assert!(said.contains("changes"), "{said}");
    let verified = server_cmd(&["audit", "verify", "--postgres", &url]);
    assert!(verified.contains("intact"), "{verified}");
    let checked = server_cmd(&["verify", "--postgres", &url]);
    assert!(checked.contains("verified"), "{checked}");
    let pg_audit = server_cmd(&["audit", "show", "--postgres", &url, "--json"]);
    assert_eq!(
        pg_audit, sled_audit,
        "the audit log differs after the move (the migration itself is not an act on the log)"
    );

    // A second migration into the same database is refused: it is no longer empty.
    let again = migrate(&data, &url);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The same devices, on the same address, now served from PostgreSQL: no reset, nothing
    // resent, everything there, and they go on editing.
    let server = Server::start_postgres_on(&url, &addr);
    let synced = mark.sync();
    assert_eq!(
        synced["resets"], 0,
        "the device was told to start over: {synced}"
    );
    assert_eq!(
        synced["changes_down"], 0,
        "the device was sent again what it held: {synced}"
    );
    assert_eq!(mark.json(&["status", "--json"])["cursor"], cursor_before);
    assert_eq!(mark.show(&case), before);
    assert_eq!(mark.json(&["history", &case, "--json"]), history_before);
    priya.ok(&["plan", "append", &case, "--text", " After the move."]);
    priya.sync();
    mark.sync();
    assert!(plan_text(&mark.show(&case)).contains("Before the move. After the move."));
    let fresh = Cli::login(
        tmp.path().join("fresh"),
        &server,
        server_cmd(&[
            "admin",
            "--postgres",
            &url,
            "token",
            "issue",
            "--staff",
            "Ruth Adebayo",
        ])
        .trim(),
    );
    fresh.sync();
    drop(server);
    let verified = server_cmd(&["audit", "verify", "--postgres", &url]);
    assert!(verified.contains("intact"), "{verified}");
}
