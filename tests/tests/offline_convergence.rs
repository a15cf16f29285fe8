//! Two devices edit the same case offline, then sync; a third device pulls fresh. All three show
//! the same case, and nothing either of them typed is lost.

mod common;
use common::*;

#[test]
fn two_offline_devices_converge_and_keep_every_character_they_typed() {
    let (tmp, data, staff) = demo_borough();
    let priya = token_of(&staff, "Priya Shah");
    let mark = token_of(&staff, "Mark Ellison");
    let priya_laptop = issue_token(&data, "Priya Shah");

    let server = Server::start(&data);
    let a = Cli::login(tmp.path().join("a"), &server, &priya);
    let b = Cli::login(tmp.path().join("b"), &server, &mark);

    // Device A opens the case and shares it; B receives it.
    let case = a.ok(&[
        "case",
        "new",
        "--name",
        "Test Person One",
        "--nhs-number",
        "9990000018",
    ]);
    a.ok(&[
        "plan",
        "append",
        &case,
        "--text",
        "Goal: home by Friday with a morning call.",
    ]);
    a.ok(&["about-me", "append", &case, "--text", "Call me Tess."]);
    a.sync();
    b.sync();
    assert_eq!(
        plan_text(&b.show(&case)),
        "Goal: home by Friday with a morning call."
    );

    // Both go offline: the server is down while they work.
    drop(server);
    let (code, err) = a.fails(&["sync"]);
    assert_eq!(code, 3, "an unreachable server is exit code 3: {err}");

    // A writes and files notes, and edits the same plan paragraph and About Me.
    let n1 = a.ok(&[
        "note",
        "add",
        &case,
        "--kind",
        "visit",
        "--text",
        "Visited at home; A-NOTE-ONE.",
    ]);
    a.ok(&["note", "file", &n1]);
    let n2 = a.ok(&["note", "add", &case, "--text", "Phoned the GP; A-NOTE-TWO."]);
    a.ok(&["note", "file", &n2]);
    a.ok(&[
        "plan",
        "splice",
        &case,
        "--pos",
        "20",
        "--delete",
        "0",
        "--text",
        "[A: with key safe] ",
    ]);
    a.ok(&[
        "about-me",
        "append",
        &case,
        "--text",
        " A: feeds the birds at 7am.",
    ]);

    // B edits the same paragraph of the plan, and About Me.
    b.ok(&[
        "plan",
        "splice",
        &case,
        "--pos",
        "6",
        "--delete",
        "0",
        "--text",
        "[B: walk to the shop] ",
    ]);
    b.ok(&[
        "plan",
        "append",
        &case,
        "--text",
        " B: OT review in a week.",
    ]);
    b.ok(&[
        "about-me",
        "splice",
        &case,
        "--pos",
        "0",
        "--delete",
        "0",
        "--text",
        "B: prefers tea. ",
    ]);

    // Back in coverage.
    let server = Server::start(&data);
    for dev in [&a, &b] {
        dev.ok(&[
            "login",
            "--server",
            &server.url,
            "--token",
            if dev.store == a.store { &priya } else { &mark },
        ]);
    }
    a.sync();
    b.sync();
    a.sync();
    let c = Cli::login(tmp.path().join("c"), &server, &priya_laptop);
    c.sync();

    let (sa, sb, sc) = (a.show(&case), b.show(&case), c.show(&case));
    assert_eq!(sa, sb, "A and B differ after syncing");
    assert_eq!(sa, sc, "a fresh device differs from A");

    let plan = plan_text(&sa);
    for typed in [
        "Goal: ",
        "home by Friday",
        "[A: with key safe] ",
        "[B: walk to the shop] ",
        " B: OT review in a week.",
        "with a morning call.",
    ] {
        assert!(plan.contains(typed), "the plan lost {typed:?}: {plan:?}");
    }
    let expected_len = "Goal: home by Friday with a morning call.".len()
        + "[A: with key safe] ".len()
        + "[B: walk to the shop] ".len()
        + " B: OT review in a week.".len();
    assert_eq!(
        plan.len(),
        expected_len,
        "characters were lost or duplicated: {plan:?}"
    );

    let about = about_me(&sa);
    for typed in [
        "Call me Tess.",
        " A: feeds the birds at 7am.",
        "B: prefers tea. ",
    ] {
        assert!(about.contains(typed), "About Me lost {typed:?}: {about:?}");
    }

    let notes = sa["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 2);
    for (note, marker) in notes.iter().zip(["A-NOTE-ONE", "A-NOTE-TWO"]) {
        assert_eq!(note["content"]["status"], "filed");
        assert!(note["content"]["text"].as_str().unwrap().contains(marker));
    }
    assert_eq!(sa["conflicts"], serde_json::json!([]));
}
