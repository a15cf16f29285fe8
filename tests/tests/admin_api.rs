//! The admin API through real processes: `casenote-server admin --server URL` against a server
//! that devices keep syncing with, never stopped. A revoked device's next sync is refused
//! `device_revoked`; a case whose team is taken off leaves that team's devices at their next
//! sync; a restricted document reaches a team at its next sync once granted. Admin tokens and
//! device tokens never open each other's API, and every act is audited with the admin's id.

mod common;
use casenote_protocol::{ErrorCode, Seq};
use common::*;
use serde_json::Value;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `casenote-server ARGS...` with `--server URL` (after `admin`, as `--data DIR` goes, or
/// at the end of `audit show`, `export`) and the admin token in CASENOTE_ADMIN_TOKEN.
fn over_api(server: &Server, token: &str, args: &[&str]) -> Output {
    if args[0] == "admin" {
        return admin_over_api(server, token, &args[1..]);
    }
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", server.url.as_str()]);
    Command::new(SERVER_BIN)
        .args(all)
        .env("CASENOTE_ADMIN_TOKEN", token)
        .env_remove("CASENOTE_POSTGRES_URL")
        .output()
        .expect("run casenote-server")
}

/// [`over_api`], which must succeed; its stdout, trimmed.
fn api_ok(server: &Server, token: &str, args: &[&str]) -> String {
    let out = over_api(server, token, args);
    assert!(
        out.status.success(),
        "casenote-server {args:?} --server failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn api_json(server: &Server, token: &str, args: &[&str]) -> Value {
    serde_json::from_str(&api_ok(server, token, args)).expect("JSON output")
}

/// The id of the admin token the demo printed (the only one, `demo`).
fn demo_admin_id(server: &Server, token: &str) -> String {
    let list = api_json(server, token, &["admin", "list", "--json"]);
    let admins = list["admins"].as_array().expect("an admins list");
    assert_eq!(admins.len(), 1, "{admins:?}");
    admins[0]["admin_id"].as_str().unwrap().to_string()
}

fn case_of(staff_cases: &Value, label: &str) -> String {
    staff_cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == label)
        .map(|c| c["case_id"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no demo case {label}"))
}

/// Loads the demo: its staff tokens, its cases, and its admin token.
fn demo_all(data: &std::path::Path) -> (Vec<Staff>, Value, String) {
    let out: Value = serde_json::from_str(&server_cmd_on(&["demo"], data, &["--json"])).unwrap();
    let staff = out["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Staff {
            name: t["staff"].as_str().unwrap().to_string(),
            team: t["team"].as_str().unwrap().to_string(),
            token: t["token"].as_str().unwrap().to_string(),
        })
        .collect();
    let admin = out["admin_token"].as_str().unwrap().to_string();
    (staff, out["cases"].clone(), admin)
}

/// A device that keeps syncing (pulling, confirming reconciliations) until told to stop, from a
/// thread; counts its answers, and stops at the first refusal, keeping it.
struct Syncing {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Synced>,
}

/// What a syncing device saw.
#[derive(Debug)]
struct Synced {
    ok: usize,
    /// Syncs answered 200 that started after the act returned.
    ok_after: usize,
    /// The refusal that stopped it: status and code.
    refusal: Option<(u16, ErrorCode)>,
}

impl Syncing {
    /// `after` is set by the test once an act returned: a refusal records whether the sync it
    /// refused had started after that.
    fn start(url: &str, token: &str, after: Arc<AtomicBool>) -> Syncing {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, token, halt) = (url.to_string(), token.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut cursor, mut confirm) = (Seq(0), None);
            let mut seen = Synced {
                ok: 0,
                ok_after: 0,
                refusal: None,
            };
            while !halt.load(Ordering::Relaxed) {
                let started_after = after.load(Ordering::SeqCst);
                match raw::sync_confirming(&url, &token, cursor, vec![], confirm) {
                    Ok(r) => {
                        confirm = r.reconcile_id.or(confirm);
                        cursor = r.cursor;
                        seen.ok += 1;
                        seen.ok_after += usize::from(started_after);
                    }
                    Err((status, body)) => {
                        seen.refusal = Some((status, body.code));
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        });
        Syncing { stop, thread }
    }

    fn finish(self) -> Synced {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the syncing thread")
    }
}

#[test]
fn admin_acts_on_a_live_server_under_device_load_take_effect_at_the_devices_next_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let (staff, cases, admin) = demo_all(&data);
    let daniel = case_of(&cases, "Daniel");
    let server = Server::start(&data);
    let admin_id = demo_admin_id(&server, &admin);

    // Devices syncing all along, in threads.
    let never = Arc::new(AtomicBool::new(false));
    let load: Vec<Syncing> = ["Grace Liu", "Owen Hughes", "Joe Ward", "Ruth Adebayo"]
        .iter()
        .map(|n| Syncing::start(&server.url, &token_of(&staff, n), never.clone()))
        .collect();
    let writer_stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let ruth = Cli::login(
            tmp.path().join("ruth"),
            &server,
            &token_of(&staff, "Ruth Adebayo"),
        );
        let stop = writer_stop.clone();
        std::thread::spawn(move || {
            let case = ruth.ok(&["case", "new", "--name", "Load Person"]);
            let mut synced = 0;
            while !stop.load(Ordering::Relaxed) {
                ruth.ok(&["note", "add", &case, "--text", "a visit"]);
                ruth.sync();
                synced += 1;
            }
            synced
        })
    };

    // A device enrolled through the API, revoked through the API while it syncs.
    let issued = api_json(
        &server,
        &admin,
        &[
            "admin",
            "token",
            "issue",
            "--staff",
            "Mark Ellison",
            "--device-name",
            "t",
            "--json",
        ],
    );
    let (mark_token, mark_device) = (
        issued["token"].as_str().unwrap().to_string(),
        issued["device_id"].as_str().unwrap().to_string(),
    );
    let revoked = Arc::new(AtomicBool::new(false));
    let mark = Syncing::start(&server.url, &mark_token, revoked.clone());
    eventually("the enrolled device syncing", || {
        raw::whoami(&server.url, &mark_token)["device_id"] == mark_device.as_str()
    });
    std::thread::sleep(Duration::from_millis(200));
    api_ok(
        &server,
        &admin,
        &["admin", "token", "revoke", "--device", &mark_device],
    );
    revoked.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mark.thread.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the revoked device was never refused"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mark = mark.finish();
    assert!(
        mark.ok > 0,
        "the device synced before it was revoked: {mark:?}"
    );
    assert_eq!(
        mark.ok_after, 0,
        "a sync after the revocation was answered: {mark:?}"
    );
    assert_eq!(mark.refusal, Some((401, ErrorCode::DeviceRevoked)));

    // Taking Locality Team North off Daniel's case: Priya's device drops it at its next sync.
    let priya = device(&tmp, &server, &staff, "priya", "Priya Shah");
    priya.sync();
    assert!(
        case_ids(&priya).contains(&daniel),
        "Priya's team is on Daniel's case"
    );
    let team = "Locality Team North";
    api_ok(
        &server,
        &admin,
        &[
            "admin",
            "case",
            "remove-team",
            "--case",
            &daniel,
            "--team",
            team,
        ],
    );
    priya.sync();
    assert!(
        !case_ids(&priya).contains(&daniel),
        "the case left Priya's device"
    );
    api_ok(
        &server,
        &admin,
        &[
            "admin", "case", "add-team", "--case", &daniel, "--team", team,
        ],
    );
    priya.sync();
    assert!(case_ids(&priya).contains(&daniel), "the case came back");

    // Granting the team the restricted safeguarding section: it arrives at the next sync.
    let shown = api_json(
        &server,
        &admin,
        &["admin", "case", "show", "--case", &daniel, "--json"],
    );
    let restricted = shown["docs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "restricted")
        .map(|d| d["doc_id"].as_str().unwrap().to_string())
        .expect("Daniel's case has a restricted document");
    let priya_token = token_of(&staff, "Priya Shah");
    let (pulled, _, cursor) = raw::pull_all(&server.url, &priya_token, Seq(0));
    let holds = |docs: &[casenote_protocol::wire::DocPull]| {
        docs.iter().any(|d| d.doc_id.to_string() == restricted)
    };
    assert!(
        !holds(&pulled),
        "the restricted section is not Priya's team's yet"
    );
    api_ok(
        &server,
        &admin,
        &[
            "admin",
            "restricted",
            "grant",
            "--doc",
            &restricted,
            "--team",
            team,
        ],
    );
    let (pulled, _, _) = raw::pull_all(&server.url, &priya_token, cursor);
    assert!(
        holds(&pulled),
        "the granted section arrived at the next sync"
    );

    // The load went on throughout, every sync answered.
    writer_stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("the writing device");
    assert!(written > 0);
    for l in load {
        let seen = l.finish();
        assert!(
            seen.ok > 0 && seen.refusal.is_none(),
            "a loaded device: {seen:?}"
        );
    }

    // Each act is in the audit log with the admin's id, read through the API.
    let entries = api_json(&server, &admin, &["audit", "show", "--json"]);
    let by_admin = |kind: &str, action: Option<&str>| {
        entries.as_array().unwrap().iter().any(|e| {
            e["kind"] == kind
                && action.is_none_or(|a| e["details"]["action"] == a)
                && e["details"]["by"] == serde_json::json!({"via": "admin", "admin_id": admin_id})
        })
    };
    assert!(by_admin("enrol", None));
    assert!(by_admin("token_revoke", None));
    assert!(by_admin("access_change", Some("case_remove_team")));
    assert!(by_admin("access_change", Some("case_add_team")));
    assert!(by_admin("access_change", Some("restricted_grant")));
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn a_device_token_never_opens_the_admin_api_nor_an_admin_token_the_device_api() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let (staff, admin) = demo_with_admin(&data);
    assert!(admin.starts_with("cna_"));
    let server = Server::start(&data);
    let device_token = token_of(&staff, "Priya Shah");
    let post = |path: &str, token: &str| {
        ureq::post(&format!("{}{path}", server.url))
            .set("authorization", &format!("Bearer {token}"))
            .send_string("{}")
            .map_err(Box::new)
    };
    let refused = |answer: Result<ureq::Response, Box<ureq::Error>>, what: &str| match answer
        .map_err(|e| *e)
    {
        Err(ureq::Error::Status(401, r)) => {
            let body: Value = r.into_json().unwrap();
            assert_eq!(body["code"], "unauthorized", "{what}");
        }
        other => panic!("{what}: answered {other:?}"),
    };
    for token in [device_token.as_str(), "cna_0000", ""] {
        refused(
            post("/v1/admin/list", token),
            "the admin API, a non-admin token",
        );
    }
    let out = over_api(&server, &device_token, &["admin", "list", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a device token opened the admin API"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
    assert!(post("/v1/admin/list", &admin).is_ok());

    let whoami = ureq::get(&format!("{}/v1/whoami", server.url))
        .set("authorization", &format!("Bearer {admin}"))
        .call()
        .map_err(Box::new);
    refused(whoami, "the device API, an admin token");
    let sync = raw::sync(&server.url, &admin, Seq(0), vec![]);
    assert_eq!(
        sync.map(|_| ()).unwrap_err().1.code,
        ErrorCode::Unauthorized
    );

    // A second admin revokes the first: from then on it opens nothing.
    let second = api_json(
        &server,
        &admin,
        &["admin", "admin-token", "issue", "--name", "b", "--json"],
    );
    let second = second["token"].as_str().unwrap().to_string();
    let first_id = demo_admin_id_of(&server, &second, "demo");
    api_ok(
        &server,
        &second,
        &["admin", "admin-token", "revoke", "--id", &first_id],
    );
    refused(post("/v1/admin/list", &admin), "a revoked admin token");
    let refusals = api_json(&server, &second, &["audit", "show", "--json"]);
    let unauthorized = refusals
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "refused" && e["details"]["route"] == "/v1/admin/list")
        .count();
    assert!(unauthorized >= 1, "refusals on the admin API are audited");
}

/// The id of the admin token named `name`.
fn demo_admin_id_of(server: &Server, token: &str, name: &str) -> String {
    let list = api_json(server, token, &["admin", "list", "--json"]);
    list["admins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .map(|a| a["admin_id"].as_str().unwrap().to_string())
        .expect("the admin token is listed")
}

#[test]
fn every_admin_act_runs_over_the_api_audited_with_the_admins_id_and_prints_as_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let (_staff, cases, admin) = demo_all(&data);
    let (peggy, daniel) = (case_of(&cases, "Peggy"), case_of(&cases, "Daniel"));
    let server = Server::start(&data);
    let admin_id = demo_admin_id(&server, &admin);
    let ok = |args: &[&str]| api_ok(&server, &admin, args);
    ok(&["admin", "org", "add", "--name", "Vale Hospice"]);
    ok(&[
        "admin",
        "team",
        "add",
        "--org",
        "Vale Hospice",
        "--name",
        "Night Team",
    ]);
    let staff = ok(&[
        "admin",
        "staff",
        "add",
        "--name",
        "New Nurse",
        "--role",
        "nurse",
        "--org",
        "Vale Hospice",
        "--team",
        "Night Team",
    ]);
    // A member of staff joins only teams of their own organisation (issue 16).
    ok(&[
        "admin",
        "team",
        "add",
        "--org",
        "Vale Hospice",
        "--name",
        "Day Team",
    ]);
    ok(&[
        "admin", "staff", "add-team", "--staff", &staff, "--team", "Day Team",
    ]);
    ok(&[
        "admin",
        "staff",
        "remove-team",
        "--staff",
        &staff,
        "--team",
        "Day Team",
    ]);
    // Controllers: an agreement, an objection and its override, a team move.
    let hospice_trust = ["--between", "Vale Hospice", "--and", "Castlebridge Council"];
    ok(&[&["admin", "agreement", "add"][..], &hospice_trust[..]].concat());
    ok(&[&["admin", "agreement", "end"][..], &hospice_trust[..]].concat());
    ok(&["admin", "agreement", "list"]);
    ok(&["admin", "case", "object", "--case", &peggy]);
    ok(&[
        "admin",
        "case",
        "override",
        "--case",
        &peggy,
        "--reason-category",
        "vital-interests",
    ]);
    ok(&["admin", "case", "override-end", "--case", &peggy]);
    ok(&["admin", "case", "object-withdraw", "--case", &peggy]);
    ok(&[
        "admin",
        "team",
        "move",
        "--team",
        "Day Team",
        "--to-org",
        "Castlebridge Council",
        "--records",
        "stay",
    ]);
    let token = ok(&["admin", "token", "issue", "--staff", "New Nurse"]);
    assert!(token.starts_with("cn_"));
    ok(&["admin", "staff", "revoke", "--staff", &staff]);
    ok(&[
        "admin",
        "case",
        "add-team",
        "--case",
        &peggy,
        "--team",
        "Night Team",
    ]);
    ok(&[
        "admin",
        "case",
        "remove-team",
        "--case",
        &peggy,
        "--team",
        "Night Team",
    ]);
    let shown = api_json(
        &server,
        &admin,
        &["admin", "case", "show", "--case", &daniel, "--json"],
    );
    let restricted = shown["docs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "restricted")
        .map(|d| d["doc_id"].as_str().unwrap().to_string())
        .unwrap();
    ok(&[
        "admin",
        "restricted",
        "grant",
        "--doc",
        &restricted,
        "--team",
        "Ward 7",
    ]);
    ok(&[
        "admin",
        "restricted",
        "revoke",
        "--doc",
        &restricted,
        "--team",
        "Ward 7",
    ]);
    ok(&["admin", "restored"]);
    let other = api_json(
        &server,
        &admin,
        &["admin", "admin-token", "issue", "--name", "o", "--json"],
    );
    let other_id = other["admin_id"].as_str().unwrap();
    ok(&["admin", "admin-token", "revoke", "--id", other_id]);
    let out = tmp.path().join("export");
    ok(&["export", "--case", &peggy, "--out", out.to_str().unwrap()]);
    let record: Value =
        serde_json::from_slice(&std::fs::read(out.join("record.json")).unwrap()).unwrap();
    assert_eq!(record["case"]["case_id"], peggy.as_str());
    assert!(std::fs::read_to_string(out.join("record.html"))
        .unwrap()
        .contains("<html"));
    assert!(ok(&["audit", "verify"]).starts_with("audit log intact"));

    // A refused act says why and changes nothing.
    let dup = over_api(
        &server,
        &admin,
        &["admin", "org", "add", "--name", "Vale Hospice"],
    );
    assert_eq!(dup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let missing = over_api(
        &server,
        &admin,
        &["admin", "staff", "revoke", "--staff", "Nobody"],
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not_found"));

    // The same listings over the API as from the stopped store.
    let reads: [&[&str]; 4] = [
        &["admin", "list", "--json"],
        &["admin", "case", "show", "--case", &daniel, "--json"],
        &["admin", "quarantine", "list", "--json"],
        &["admin", "agreement", "list", "--json"],
    ];
    let online: Vec<String> = reads.iter().map(|r| ok(r)).collect();
    let audit_online = api_json(&server, &admin, &["audit", "show", "--json"]);
    assert_eq!(server.stop().code(), Some(0));
    for (read, shown) in reads.iter().zip(&online) {
        let offline = server_cmd_on(&read[..1], &data, &read[1..]);
        assert_eq!(offline.trim(), shown, "{read:?}");
    }
    let entries = audit_entries(&data);
    assert_eq!(entries.len(), audit_online.as_array().unwrap().len());
    let by = serde_json::json!({"via": "admin", "admin_id": admin_id});
    let done = |kind: &str, action: Option<&str>| {
        entries.iter().any(|e| {
            e["kind"] == kind
                && action.is_none_or(|a| e["details"]["action"] == a)
                && e["details"]["by"] == by
        })
    };
    for action in [
        "org_add",
        "team_add",
        "staff_add",
        "restored",
        "admin_token_issue",
        "admin_token_revoke",
    ] {
        assert!(done("admin", Some(action)), "{action}");
    }
    for action in [
        "staff_add_team",
        "staff_remove_team",
        "case_add_team",
        "case_remove_team",
        "restricted_grant",
        "restricted_revoke",
        "agreement_add",
        "agreement_end",
        "case_object",
        "case_override",
        "case_override_end",
        "case_object_withdraw",
        "team_move",
    ] {
        assert!(done("access_change", Some(action)), "{action}");
    }
    for kind in ["enrol", "staff_revoke", "export"] {
        assert!(done(kind, None), "{kind}");
    }
    assert!(server_cmd_on(&["audit", "verify"], &data, &[]).starts_with("audit log intact"));
}
