//! A note filed on the wrong person (issue 16), end to end with real processes: `casenote-server
//! admin note misfiled` on a stopped store and through the admin API. The note leaves the wrong
//! person's record on the server and on every device, a stub there says who moved it, when and
//! why, and the note is re-filed on the right person with its author; a SIGKILL during the
//! rewrite of the server's files loses nothing and leaves nothing.
//!
//! What "no byte left" is searched for. Devices of the wrong person's team only: the note's text
//! (the marker), in their decrypted records and the sealed records of the note as they were on
//! disk, in their files. The server keeps the note, re-filed, so its text rightly stays there;
//! what must leave is the note as part of the wrong person's record: the bytes that tie the two
//! (the case → documents index row, `case ‖ note`, and the document's row, `note ‖ case`), in
//! every file of the sled directory or of the whole PostgreSQL cluster (tables, indexes and
//! write-ahead log); the note's text is no use there, as Automerge stores a change of this size
//! deflated. That the erasure leaves no byte of a change at all is the server's unit test
//! (`store::sled::tests`; the conformance suite on both backends). The server's own log is
//! searched for the marker too. Each search has its positive control before the move.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn uuid_bytes(id: &str) -> [u8; 16] {
    *uuid::Uuid::parse_str(id.trim()).unwrap().as_bytes()
}

/// The bytes that tie `note` to `case` in the server's rows: `case ‖ note`, `note ‖ case`.
fn ties(case: &str, note: &str) -> Vec<Vec<u8>> {
    let (c, n) = (uuid_bytes(case), uuid_bytes(note));
    vec![[c, n].concat(), [n, c].concat()]
}

/// Two devices of Locality Team North (Priya, who writes the note, and Mark) hold the wrong
/// person's case; Lena, of Children's Early Help, holds the right person's.
struct Scene {
    tmp: tempfile::TempDir,
    data: PathBuf,
    server: Option<Server>,
    logs: Vec<PathBuf>,
    priya: Cli,
    mark: Cli,
    lena: Cli,
    priya_id: String,
    wrong: String,
    right: String,
}

impl Scene {
    fn new(tmp: tempfile::TempDir, data: PathBuf, staff: &[Staff]) -> Scene {
        let log = tmp.path().join("server-0.log");
        let server = Server::start_logging(&data, &log);
        let priya = device(&tmp, &server, staff, "priya", "Priya Shah");
        let mark = device(&tmp, &server, staff, "mark", "Mark Ellison");
        let lena = device(&tmp, &server, staff, "lena", "Lena Fischer");
        let priya_id = raw::staff_id(&server.url, &token_of(staff, "Priya Shah")).to_string();
        let wrong = priya.ok(&["case", "new", "--name", "Wrong Person"]);
        let right = lena.ok(&["case", "new", "--name", "Right Person"]);
        lena.sync();
        Scene {
            tmp,
            data,
            server: Some(server),
            logs: vec![log],
            priya,
            mark,
            lena,
            priya_id,
            wrong,
            right,
        }
    }

    /// Priya files a note with `marker` on the wrong person; both team devices sync it.
    fn misfile_a_note(&self, marker: &str) -> String {
        let note = self
            .priya
            .ok(&["note", "add", &self.wrong, "--text", marker]);
        self.priya.ok(&["note", "file", &note]);
        self.priya.sync();
        self.mark.sync();
        note
    }

    fn team_devices(&self) -> [&Cli; 2] {
        [&self.priya, &self.mark]
    }

    fn url(&self) -> String {
        self.server.as_ref().unwrap().url.clone()
    }

    fn stop(&mut self) {
        drop(self.server.take());
    }

    /// Starts the server again on the same port, logging to a new file.
    fn start(&mut self, addr: &str) {
        let log = self
            .tmp
            .path()
            .join(format!("server-{}.log", self.logs.len()));
        self.server = Some(Server::start_logging_on(&self.data, addr, &log));
        self.logs.push(log);
    }

    fn addr(&self) -> String {
        self.server.as_ref().unwrap().addr()
    }

    /// What each team device holds of `note` before the move, checked to be there (the
    /// positive controls), with the server's ties of the note to the wrong case.
    fn before(&self, note: &str, marker: &str) -> Vec<Vec<Vec<u8>>> {
        let mut sealed = Vec::new();
        for dev in self.team_devices() {
            assert!(
                contains(&dev.decrypted_bytes(), marker.as_bytes()),
                "positive control: the marker is in a team device's records"
            );
            let records = dev.sealed_records_of(note);
            assert!(
                all_in(&all_bytes_under(&dev.store), &records),
                "positive control: the note's sealed records are in the device's files"
            );
            sealed.push(records);
        }
        assert!(
            any_in(&server_store_bytes(&self.data), &ties(&self.wrong, note)),
            "positive control: the server's files tie the note to the wrong case"
        );
        sealed
    }

    /// Everything that must hold once the devices synced after the move of `note`.
    fn after(&self, note: &str, marker: &str, sealed: &[Vec<Vec<u8>>], by: &str) {
        for (dev, records) in self.team_devices().into_iter().zip(sealed) {
            let report = dev.sync();
            assert!(
                !contains(&dev.decrypted_bytes(), marker.as_bytes()),
                "the note is still in a wrong-case device's records ({report})"
            );
            assert!(
                !any_in(&all_bytes_under(&dev.store), records),
                "a sealed record of the note is left in a wrong-case device's files"
            );
            let shown = dev.show(&self.wrong);
            let notes = shown["notes"].as_array().unwrap();
            assert!(
                notes.iter().all(|n| n["note_id"] != note),
                "the note is still on the wrong person: {shown}"
            );
            let page = dev.ok(&["show", &self.wrong]);
            assert!(
                page.contains(&format!("Note moved to another record by {by}")),
                "the stub does not show: {page}"
            );
            assert!(page.contains(": wrong-person"), "{page}");
            assert!(!page.contains(marker), "{page}");
        }
        self.lena.sync();
        let shown = self.lena.show(&self.right);
        let notes = shown["notes"].as_array().unwrap();
        assert_eq!(
            notes.len(),
            1,
            "the note is re-filed on the right person: {shown}"
        );
        let c = &notes[0]["content"];
        assert_eq!(c["text"], marker);
        assert_eq!(c["status"], "filed");
        assert_eq!(c["case_id"], self.right.as_str());
        assert_eq!(
            c["author"]["staff_id"], self.priya_id,
            "the re-filed note keeps its author"
        );
        assert_ne!(notes[0]["note_id"], note, "re-filed as a new document");
        let page = self.lena.ok(&["show", &self.right]);
        assert!(page.contains(marker), "{page}");
        assert!(
            !page.contains("Note moved"),
            "no stub on the right person: {page}"
        );
    }

    /// The server's files no longer tie `note` to the wrong case.
    fn server_is_clean(&self, note: &str) {
        assert!(
            !any_in(&server_store_bytes(&self.data), &ties(&self.wrong, note)),
            "the server's files still tie the note to the wrong person"
        );
    }

    /// The server's log never held the note's text; the audit chain and the store verify; the
    /// move is audited at both ends with ids and hashes, never the text.
    fn verified(&mut self, marker: &str, moves: usize) {
        self.stop();
        for log in &self.logs {
            let text = std::fs::read(log).unwrap();
            assert!(!text.is_empty(), "positive control: the server logged");
            assert!(
                !contains(&text, marker.as_bytes()),
                "the server's log holds the note's text"
            );
        }
        server_cmd_on(&["audit", "verify"], &self.data, &[]);
        server_cmd_on(&["verify"], &self.data, &[]);
        let moved: Vec<Value> = audit_entries(&self.data)
            .into_iter()
            .filter(|e| e["kind"] == "misfiled")
            .collect();
        assert_eq!(moved.len(), 2 * moves, "one entry at each end: {moved:?}");
        for e in &moved {
            assert!(!e.to_string().contains(marker), "{e}");
            assert!(e["details"]["changes_sha256"].is_string(), "{e}");
        }
    }
}

/// Runs `casenote-server admin STORE ARGS`, which must fail; returns its stderr.
fn admin_fails(data: &Path, args: &[&str]) -> String {
    let out = Command::new(SERVER_BIN)
        .arg("admin")
        .args(store_args(data))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} should have been refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn misfiled_args<'a>(note: &'a str, to: &'a str) -> Vec<&'a str> {
    vec![
        "note",
        "misfiled",
        "--note",
        note,
        "--to-case",
        to,
        "--reason-category",
        "wrong-person",
        "--reason",
        "filed under the wrong person",
    ]
}

#[test]
fn a_note_moved_on_a_stopped_store_leaves_every_store_of_the_wrong_person_and_keeps_its_author() {
    let (tmp, data, staff) = demo_borough();
    let mut s = Scene::new(tmp, data, &staff);
    let marker = "MARKER-misfiled-on-the-wrong-person-e41c";
    let note = s.misfile_a_note(marker);
    let sealed = s.before(&note, marker);

    let addr = s.addr();
    s.stop();
    // Refused with a reason, nothing changed: an unknown category, the case the note is on, a
    // draft.
    let draft = {
        let server = Server::start_on(&s.data, &addr);
        let d = s
            .priya
            .ok(&["note", "add", &s.wrong, "--text", "a draft stays"]);
        s.priya.sync();
        drop(server);
        d
    };
    let mut unknown = misfiled_args(&note, &s.right);
    unknown[7] = "nonsense"; // the category
    for (args, says) in [
        (unknown, "unknown reason category"),
        (misfiled_args(&note, &s.wrong), "already on case"),
        (misfiled_args(&draft, &s.right), "is a draft"),
    ] {
        let err = admin_fails(&s.data, &args);
        assert!(err.contains(says), "{err}");
    }
    let out = admin(&s.data, &misfiled_args(&note, &s.right));
    assert!(
        out.contains(&format!(
            "note {} moved from case {}",
            note.trim(),
            s.wrong.trim()
        )),
        "{out}"
    );
    s.server_is_clean(&note);
    let again = admin_fails(&s.data, &misfiled_args(&note, &s.right));
    assert!(again.contains("no document with id"), "{again}");
    s.start(&addr);

    s.after(&note, marker, &sealed, "an administrator on the server, ");
    let page = s.priya.ok(&["show", &s.wrong]);
    assert!(page.contains("filed under the wrong person"), "{page}");
    // The wrong person's record goes on taking edits on top of the server's stub change.
    s.priya.ok(&[
        "about-me",
        "append",
        &s.wrong,
        "--text",
        "Edited after the move.",
    ]);
    s.priya.sync();
    s.mark.sync();
    assert_eq!(
        s.mark.show(&s.wrong)["record"]["about_me"],
        "Edited after the move."
    );
    s.server_is_clean(&note);
    s.verified(marker, 1);
}

#[test]
fn a_note_moved_through_the_admin_api_leaves_at_the_next_sync_and_the_files_at_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let (staff, admin_token) = demo_with_admin(&data);
    let mut s = Scene::new(tmp, data, &staff);
    let marker = "MARKER-misfiled-moved-over-the-api-77a0";
    let note = s.misfile_a_note(marker);
    let sealed = s.before(&note, marker);

    let mut args = vec!["admin", "--server"];
    let url = s.url();
    args.push(&url);
    args.extend(misfiled_args(&note, &s.right));
    let out = Command::new(SERVER_BIN)
        .args(&args)
        .env("CASENOTE_ADMIN_TOKEN", &admin_token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if on_postgres() {
        s.server_is_clean(&note);
    } else {
        assert!(
            stdout.contains("next opened"),
            "a running sled server says when its files are rewritten: {stdout}"
        );
    }

    // No restart: the rows are gone and every device evicts the note at its next sync.
    s.after(&note, marker, &sealed, "administrator ");
    let page = s.mark.ok(&["show", &s.wrong]);
    let stub = page.lines().find(|l| l.contains("Note moved")).unwrap();
    assert!(
        uuid::Uuid::parse_str(
            stub.split("administrator ")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
        )
        .is_ok(),
        "over the API the stub names the admin token's id: {stub}"
    );
    let addr = s.addr();
    s.stop();
    s.start(&addr); // a sled store rewrites its files as it opens
    if !on_postgres() {
        let log = s.logs.last().unwrap().clone();
        eventually("the server logs the rewrite", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("the store's files were rewritten for erasures")
        });
    }
    s.server_is_clean(&note);
    s.priya.sync();
    s.verified(marker, 1);
}

/// Runs `casenote-server ARGS` with the rewrite told to stall at `phase`, waits until it says
/// it stalls there, and SIGKILLs it.
fn kill_during_rewrite(args: &[&str], phase: &str) {
    let mut child = Command::new(SERVER_BIN)
        .args(args)
        .env("CASENOTE_TEST_REWRITE_STALL", phase)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("rewrite stalls at") {
                let _ = tx.send(line);
            }
        }
    });
    let said = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the rewrite reaches its stall within two minutes");
    assert!(said.contains(phase), "{said}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_sigkill_while_the_servers_files_are_rewritten_loses_nothing_and_leaves_nothing() {
    if on_postgres() {
        // PostgreSQL rewrites its tables itself (VACUUM FULL, crash-safe in the database);
        // there is no file rewrite of ours to interrupt. The other tests run on it.
        return;
    }
    let (tmp, data, staff) = demo_borough();
    let mut s = Scene::new(tmp, data, &staff);
    let marker = "MARKER-moved-while-the-server-dies-0b3d";
    let kept = "MARKER-stays-on-the-wrong-person-ae19";
    let note = s.misfile_a_note(marker);
    let other = s.misfile_a_note(kept);
    let sealed = s.before(&note, marker);

    let addr = s.addr();
    s.stop();
    let dir = s.data.to_string_lossy().into_owned();
    // Killed after the copy, before it is complete: the copy is rolled back at the next open.
    let mut args = vec!["admin", "--data", &dir];
    args.extend(misfiled_args(&note, &s.right));
    kill_during_rewrite(&args, "copied");
    // The next open rewrites again and is killed halfway through the swap.
    kill_during_rewrite(&["compact", "--data", &dir], "swapping");
    assert!(
        s.data.join(".rewrite").exists(),
        "the kill left a swap to finish"
    );
    s.start(&addr); // finishes the swap
    assert!(!s.data.join(".rewrite").exists());
    s.server_is_clean(&note);

    s.after(&note, marker, &sealed, "an administrator on the server, ");
    // Nothing else was lost: the other note is still on the wrong person, on both devices.
    for dev in s.team_devices() {
        dev.sync();
        let shown = dev.show(&s.wrong);
        let notes = shown["notes"].as_array().unwrap();
        assert_eq!(notes.len(), 1, "{shown}");
        assert_eq!(notes[0]["note_id"], other.trim());
        assert!(contains(&dev.decrypted_bytes(), kept.as_bytes()));
    }
    s.verified(marker, 1);
}

#[test]
fn a_log_with_an_erased_note_verifies_backs_up_restores_and_migrates() {
    let (tmp, data, staff) = demo_borough();
    let mut s = Scene::new(tmp, data, &staff);
    let note = s.misfile_a_note("MARKER-erased-then-copied-5e62");
    s.stop();
    admin(&s.data, &misfiled_args(&note, &s.right));

    // A backup of the store with the erased entries, restored into an empty one.
    let file = s.tmp.path().join("backup.cnb");
    let file_arg = file.to_string_lossy().into_owned();
    server_cmd_on(&["admin"], &s.data, &["backup", "--out", &file_arg]);
    let restored = s.tmp.path().join("restored");
    server_cmd_on(&["restore", "--from", &file_arg], &restored, &[]);
    for store in [&s.data, &restored] {
        server_cmd_on(&["verify"], store, &[]);
        server_cmd_on(&["audit", "verify"], store, &[]);
    }
    assert!(
        !any_in(&server_store_bytes(&restored), &ties(&s.wrong, &note)),
        "the restored store ties the note to the wrong person"
    );
    if !on_postgres() {
        // The sled store moved to PostgreSQL keeps its erased entries' places in the chain.
        let url = pg::fresh_database();
        server_cmd(&[
            "migrate",
            "--data",
            &s.data.to_string_lossy(),
            "--postgres",
            &url,
        ]);
        server_cmd(&["verify", "--postgres", &url]);
        server_cmd(&["audit", "verify", "--postgres", &url]);
    }
    // The restored store serves the right person's note to its team.
    let server = Server::start(&restored);
    let fresh = Cli::login(
        s.tmp.path().join("lena-restored"),
        &server,
        &token_of(&staff, "Lena Fischer"),
    );
    fresh.sync();
    let shown = fresh.show(&s.right);
    assert_eq!(shown["notes"].as_array().unwrap().len(), 1, "{shown}");
}
