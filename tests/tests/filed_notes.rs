//! A filed note never changes: editing it is refused with a clear error, and amending it makes a
//! new note that points back at it.

mod common;
use common::*;

#[test]
fn editing_a_filed_note_is_refused_and_an_amendment_points_back_at_it() {
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let dev = device(&tmp, &server, &staff, "dev", "Priya Shah");

    let case = dev.ok(&["case", "new", "--name", "Test Person Two"]);
    let note = dev.ok(&[
        "note",
        "add",
        &case,
        "--kind",
        "phone",
        "--text",
        "Spoke to daughter.",
    ]);
    dev.ok(&[
        "note",
        "edit",
        &note,
        "--text",
        "Spoke to daughter; agreed a visit.",
    ]);
    dev.ok(&["note", "file", &note]);

    let (code, err) = dev.fails(&["note", "edit", &note, "--text", "rewritten history"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is filed and can no longer change"),
        "unclear error: {err}"
    );
    assert!(
        err.contains("note amend"),
        "the error should say what to do instead: {err}"
    );
    let (_, err) = dev.fails(&["note", "file", &note]);
    assert!(err.contains("is filed"), "{err}");

    let amendment = dev.ok(&[
        "note",
        "amend",
        &note,
        "--correction",
        "--reason",
        "wrong relative",
        "--text",
        "It was the son, not the daughter.",
    ]);
    dev.sync();

    let show = dev.show(&case);
    let notes = show["notes"].as_array().unwrap();
    let original = notes
        .iter()
        .find(|n| n["note_id"] == note.as_str())
        .unwrap();
    assert_eq!(
        original["content"]["text"],
        "Spoke to daughter; agreed a visit."
    );
    assert_eq!(original["amended_by"], serde_json::json!([amendment]));
    let amend = notes
        .iter()
        .find(|n| n["note_id"] == amendment.as_str())
        .unwrap();
    assert_eq!(amend["content"]["amends"]["note_id"], note.as_str());
    assert_eq!(amend["content"]["amends"]["kind"], "correction");
    assert_eq!(amend["content"]["status"], "filed");

    // A draft cannot be amended (edit it instead), and nonsense ids are clear errors.
    let draft = dev.ok(&["note", "add", &case, "--text", "draft"]);
    let (_, err) = dev.fails(&["note", "amend", &draft, "--reason", "r", "--text", "t"]);
    assert!(err.contains("still a draft"), "{err}");
    let (code, _) = dev.fails(&["note", "edit", "not-a-uuid", "--text", "x"]);
    assert_eq!(code, 2, "a malformed id is a usage error");
    let (_, err) = dev.fails(&[
        "note",
        "edit",
        &uuid::Uuid::new_v4().to_string(),
        "--text",
        "x",
    ]);
    assert!(err.contains("no note with id"), "{err}");
}
