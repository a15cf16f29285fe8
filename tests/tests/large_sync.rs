//! A sync too large for one request goes out in several, and nothing in it is refused: cases
//! arrive before their notes whatever their ids (a regression found by the W1 benchmark, where
//! 43% of a 22,000-document first sync was refused).

mod common;
use casenote_client_core::Device;
use casenote_protocol::record::{Identity, NoteKind};
use common::*;

#[test]
fn a_sync_spanning_several_requests_stores_every_case_and_note() {
    let (tmp, data, staff) = demo_borough();
    let fresh_token = issue_token(&data, "Priya Shah");
    let server = Server::start(&data);
    let dev = Device::open(&tmp.path().join("dev"), &common::store_key()).unwrap();
    dev.login(&server.url, &token_of(&staff, "Priya Shah"))
        .unwrap();

    // 1,001 cases of two documents each: more documents than one request may carry
    // (limits::PUSH_DOCS_MAX), so the first sync needs two requests.
    let mut cases = Vec::new();
    for c in 0..1001 {
        let case = dev
            .case_new(&Identity {
                name: format!("Large Person {c}"),
                ..Default::default()
            })
            .unwrap();
        cases.push(case);
    }
    let note = dev
        .note_add(
            cases[1000],
            NoteKind::CaseNote,
            "The last case has a note.",
            None,
        )
        .unwrap();
    dev.note_file(note).unwrap();
    let report = dev.sync().unwrap();
    assert!(
        report.requests >= 2,
        "the push fitted in one request; the test proves nothing: {report:?}"
    );
    assert!(
        report.rejections.is_empty(),
        "documents were refused: {:?}",
        report.rejections
    );
    assert_eq!(dev.status().unwrap().unsynced_docs, 0);

    let fresh = Device::open(&tmp.path().join("fresh"), &common::store_key()).unwrap();
    fresh.login(&server.url, &fresh_token).unwrap();
    fresh.sync().unwrap();
    assert_eq!(fresh.cases().unwrap().len(), dev.cases().unwrap().len());
    for case in [cases[0], cases[500], cases[1000]] {
        assert_eq!(fresh.show(case).unwrap(), dev.show(case).unwrap());
    }
    let notes = fresh.show(cases[1000]).unwrap()["notes"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(notes, 1);
}
