//! Bounded mutation fuzzing, run as ordinary tests so CI runs them (cargo-fuzz needs a nightly
//! toolchain this project does not assume). Valid envelopes are mutated (bit flips, byte inserts
//! and deletes, truncation, splices, huge length prefixes) and fed to every decoder in protocol,
//! and, with real Automerge changes inside, to a real server over HTTP. A decoder panic, or a
//! server answer that is neither 200 nor a coded 4xx, is a failure; the input is written to
//! `tests/fuzz-crashers/`, which `every_kept_crasher_is_refused_without_panic` replays on every
//! run after. More rounds with `CASENOTE_SLOW_TESTS=1` (as CI runs it); a run prints its seed, and
//! `CASENOTE_FUZZ_SEED` replays one.

mod common;

use casenote_protocol::wire::{
    self, DocAck, DocPull, DocPush, Hash, Rejection, SyncRequest, SyncResponse, PROTOCOL_VERSION,
};
use casenote_protocol::{CaseId, DocId, DocKind, ErrorCode, Seq};
use rand::{Rng, SeedableRng};
use serde_bytes::ByteBuf;
use std::path::PathBuf;

/// A new seed each run explores new inputs; set CASENOTE_FUZZ_SEED to replay one.
fn fuzz_rng() -> rand::rngs::StdRng {
    let seed: u64 = std::env::var("CASENOTE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fuzz seed: {seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn crashers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz-crashers")
}

fn seeds() -> Vec<Vec<u8>> {
    let push = DocPush {
        doc_id: DocId::new_random(),
        case_id: CaseId::new_random(),
        kind: DocKind::Note,
        base: vec![Hash([7; 32])],
        changes: vec![
            ByteBuf::from(vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3]),
            ByteBuf::from(vec![9; 40]),
        ],
    };
    let req = SyncRequest {
        version: PROTOCOL_VERSION,
        cursor: Seq(42),
        device_clock_ms: 1_700_000_000_000,
        docs: vec![push.clone(), push],
        log_id: Some(uuid::Uuid::new_v4()),
        confirmed_reconcile: Some(5),
        views: Vec::new(),
        restricted: Vec::new(),
    };
    let resp = SyncResponse {
        version: PROTOCOL_VERSION,
        cursor: Seq(43),
        more: true,
        server_time_ms: 1,
        acks: vec![DocAck {
            doc_id: DocId::new_random(),
            heads: vec![Hash([1; 32])],
            stored: 1,
            duplicates: 0,
        }],
        docs: vec![DocPull {
            doc_id: DocId::new_random(),
            case_id: CaseId::new_random(),
            kind: DocKind::Plan,
            changes: vec![ByteBuf::from(vec![1, 2, 3])],
            heads: vec![Hash([2; 32])],
        }],
        need_full_history: vec![DocId::new_random()],
        rejections: vec![Rejection {
            doc_id: DocId::new_random(),
            code: ErrorCode::Forbidden,
            reason: "no".into(),
        }],
        evictions: vec![DocId::new_random()],
        log_id: uuid::Uuid::new_v4(),
        reset: false,
        reconcile_id: Some(9),
        lease: Some(casenote_protocol::wire::Lease::default()),
        views_through: None,
        sealed: Vec::new(),
    };
    let live = wire::LiveEvent {
        version: wire::LIVE_VERSION,
        seq: Seq(7),
        docs: vec![DocId::new_random(), DocId::new_random()],
    };
    vec![wire::encode(&req), wire::encode(&resp), wire::encode(&live)]
}

fn mutate(rng: &mut impl Rng, mut bytes: Vec<u8>, other: &[u8]) -> Vec<u8> {
    for _ in 0..rng.gen_range(1..6) {
        let len = bytes.len().max(1);
        match rng.gen_range(0..7) {
            0 => {
                let i = rng.gen_range(0..len);
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << rng.gen_range(0..8);
                }
            }
            1 => {
                let i = rng.gen_range(0..=bytes.len());
                bytes.insert(i, rng.gen());
            }
            2 if !bytes.is_empty() => {
                bytes.remove(rng.gen_range(0..bytes.len()));
            }
            3 => bytes.truncate(rng.gen_range(0..=bytes.len())),
            4 => {
                // Splice a piece of another valid envelope in.
                let from = rng.gen_range(0..other.len());
                let to = rng.gen_range(from..=other.len());
                let at = rng.gen_range(0..=bytes.len());
                bytes.splice(at..at, other[from..to].iter().copied());
            }
            5 => {
                // A huge length prefix: array, map, byte or text string of 2^32-1 or 2^64-1.
                let major = [0x5a, 0x5b, 0x7a, 0x9a, 0x9b, 0xba, 0xbb][rng.gen_range(0..7)];
                let at = rng.gen_range(0..=bytes.len());
                bytes.splice(at..at, [major, 0xff, 0xff, 0xff, 0xff]);
            }
            _ => {
                let i = rng.gen_range(0..len);
                if let Some(b) = bytes.get_mut(i) {
                    *b = [0x00, 0x17, 0x18, 0x1f, 0x7f, 0x80, 0xbf, 0xff][rng.gen_range(0..8)];
                }
            }
        }
    }
    bytes
}

fn decode_all(bytes: &[u8]) {
    let _ = wire::decode_request(bytes);
    let _ = wire::decode_response(bytes);
    let _ = wire::decode_live_event(bytes);
}

#[test]
fn mutated_envelopes_never_panic_a_decoder() {
    let rounds = common::rounds(20_000, 1_000_000);
    let seeds = seeds();
    let mut rng = fuzz_rng();
    let mut executions = 0usize;
    for round in 0..rounds {
        let seed = &seeds[round % seeds.len()];
        let other = &seeds[(round + 1) % seeds.len()];
        let input = mutate(&mut rng, seed.clone(), other);
        if std::panic::catch_unwind(|| decode_all(&input)).is_err() {
            let path = crashers_dir().join(format!("crash-{round}.bin"));
            std::fs::write(&path, &input).unwrap();
            panic!(
                "a decoder panicked; the input is kept at {}",
                path.display()
            );
        }
        executions += 1;
    }
    eprintln!("fuzz: {executions} decoder executions, no panic");
}

#[test]
fn every_kept_crasher_is_refused_without_panic() {
    let mut replayed = 0;
    for entry in std::fs::read_dir(crashers_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let bytes = std::fs::read(&path).unwrap();
            // Each kept input is malformed: it must be refused with an error, never a panic.
            assert!(
                wire::decode_request(&bytes).is_err(),
                "{} decodes",
                path.display()
            );
            decode_all(&bytes);
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no fixtures found in {}",
        crashers_dir().display()
    );
}

/// A real sync request from a real device: a case and a note, with Automerge change bytes.
fn device_request() -> Vec<u8> {
    use automerge::AutoCommit;
    use casenote_protocol::record;
    let case = CaseId::new_random();
    let mut doc = AutoCommit::new();
    record::init_case(
        &mut doc,
        case,
        &record::Identity {
            name: "Fuzz Person".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let mut note = AutoCommit::new();
    record::init_note(
        &mut note,
        &record::NewNote {
            case_id: case,
            kind: record::NoteKind::Visit,
            author: record::NoteAuthor::default(),
            occurred_at_ms: 0,
            recorded_at_ms: 0,
            text: "Seen.".into(),
            amends: None,
            late_entry_reason: None,
        },
    )
    .unwrap();
    let push = |id: DocId, kind, d: &mut AutoCommit| DocPush {
        doc_id: id,
        case_id: case,
        kind,
        base: vec![],
        changes: d
            .get_changes(&[])
            .iter()
            .map(|c| ByteBuf::from(c.raw_bytes().to_vec()))
            .collect(),
    };
    wire::encode(&SyncRequest {
        version: PROTOCOL_VERSION,
        cursor: Seq(0),
        device_clock_ms: 0,
        docs: vec![
            push(DocId(case.0), DocKind::Case, &mut doc),
            push(DocId::new_random(), DocKind::Note, &mut note),
        ],
        log_id: None,
        confirmed_reconcile: None,
        views: Vec::new(),
        restricted: Vec::new(),
    })
}

#[test]
fn mutated_requests_get_a_coded_answer_from_a_real_server_that_goes_on_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let staff = common::demo(&data);
    let token = common::token_of(&staff, "Priya Shah");
    let server = common::Server::start(&data);
    let seeds = [device_request(), seeds()[0].clone()];
    let mut rng = fuzz_rng();
    let agent = ureq::AgentBuilder::new().build();
    let rounds = common::rounds(400, 4_000);
    let mut by_status = std::collections::BTreeMap::new();
    for round in 0..rounds {
        let input = mutate(&mut rng, seeds[round % 2].clone(), &seeds[(round + 1) % 2]);
        let answer = agent
            .post(&format!("{}/v1/sync", server.url))
            .set("authorization", &format!("Bearer {token}"))
            .set("content-type", wire::CBOR_MEDIA_TYPE)
            .send_bytes(&input);
        let status = match answer {
            Ok(r) => {
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut r.into_reader(), &mut body).unwrap();
                assert!(
                    wire::decode_response(&body).is_ok(),
                    "a 200 whose body does not decode"
                );
                200
            }
            Err(ureq::Error::Status(code, r)) => {
                let body: Result<casenote_protocol::ErrorBody, _> = r.into_json();
                if code >= 500 || body.is_err() {
                    let path = crashers_dir().join(format!("server-{round}.bin"));
                    std::fs::write(&path, &input).unwrap();
                    panic!(
                        "the server answered {code} (body {body:?}); the input is kept at {}",
                        path.display()
                    );
                }
                code
            }
            Err(e) => panic!("the server stopped answering: {e}"),
        };
        *by_status.entry(status).or_insert(0) += 1;
    }
    let health = ureq::get(&format!("{}/health", server.url)).call().unwrap();
    assert_eq!(health.status(), 200);
    eprintln!("fuzz: {rounds} requests to a real server, answers by status {by_status:?}");
}
