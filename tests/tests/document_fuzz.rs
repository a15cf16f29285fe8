//! A structure-aware fuzzer: it generates Automerge changes as a hostile device could (deep and
//! wide nesting, long texts, marks, objects inside texts, many actors writing concurrently,
//! scalars of every type, deletions, counters) on top of a valid record of each kind, and runs
//! them through the server's record rules and the record views that devices and the export use.
//! Nothing may panic or overflow a stack; whatever the rules accept must be within the structure
//! limits and fully viewable. A second test sends generated pushes to a real server over HTTP and
//! checks it answers every one and keeps serving. Bounded: more cases with
//! `CASENOTE_SLOW_TESTS=1`, as CI runs it.

mod common;
use automerge::marks::{ExpandMark, Mark};
use automerge::transaction::Transactable;
use automerge::{ActorId, Author, AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, ROOT};
use casenote_protocol::record::{
    self, statutory, Identity, NewNote, NoteAuthor, NoteKind, WITHHELD,
};
use casenote_protocol::{shape, CaseId, DocKind, StaffId};
use casenote_server::validate::{self, Context, Rules, Writer};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

/// A scalar of any type Automerge has, odd values included.
#[derive(Clone, Debug)]
enum Odd {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    F64(f64),
    Counter(i64),
    Timestamp(i64),
    Bytes(usize),
    Str(String),
}

impl Odd {
    fn scalar(&self) -> ScalarValue {
        match self {
            Odd::Null => ScalarValue::Null,
            Odd::Bool(b) => ScalarValue::Boolean(*b),
            Odd::Int(i) => ScalarValue::Int(*i),
            Odd::Uint(u) => ScalarValue::Uint(*u),
            Odd::F64(f) => ScalarValue::F64(*f),
            Odd::Counter(c) => ScalarValue::counter(*c),
            Odd::Timestamp(t) => ScalarValue::Timestamp(*t),
            Odd::Bytes(n) => ScalarValue::Bytes(vec![0xfe; *n]),
            Odd::Str(s) => ScalarValue::Str(s.as_str().into()),
        }
    }
}

/// One thing a device does to the document.
#[derive(Clone, Debug)]
enum Step {
    /// Switch to another of the actors (each works on its own fork: concurrent edits).
    Actor(usize),
    Put {
        obj: usize,
        key: usize,
        value: Odd,
    },
    Make {
        obj: usize,
        key: usize,
        ty: ObjType,
    },
    /// A chain of maps this deep under a fresh root key.
    Nest(usize),
    /// This many maps under one fresh root key.
    Wide(usize),
    Splice {
        text: usize,
        pos: usize,
        del: usize,
        s: String,
    },
    Mark {
        text: usize,
        name: String,
        start: usize,
        end: usize,
        value: Odd,
    },
    /// An object inserted among a text's characters.
    InText {
        text: usize,
        pos: usize,
        ty: ObjType,
    },
    Delete {
        obj: usize,
        key: usize,
    },
    Increment {
        obj: usize,
        key: usize,
    },
}

/// Keys a step may write: the schema's own field names (so rules are met and broken) and others.
const KEYS: &[&str] = &[
    "schema",
    "case_id",
    "status",
    "text",
    "author",
    "staff_id",
    "role",
    "org",
    "team",
    "filed_at_ms",
    "occurred_at_ms",
    "late_entry_reason",
    "narrative",
    "goals",
    "actions",
    "alerts",
    "raised_by",
    "about_me",
    "name",
    "discharge_date",
    "pathway",
    "agreement",
    "by",
    "resolutions",
    "title",
    "type",
    "outcome",
    "tests",
    "result",
    "equipment",
    "third_party",
    "legal_status",
    "contacts",
    "x",
    "",
];

fn odd() -> impl Strategy<Value = Odd> {
    prop_oneof![
        Just(Odd::Null),
        any::<bool>().prop_map(Odd::Bool),
        any::<i64>().prop_map(Odd::Int),
        any::<u64>().prop_map(Odd::Uint),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            any::<f64>()
        ]
        .prop_map(Odd::F64),
        any::<i64>().prop_map(Odd::Counter),
        any::<i64>().prop_map(Odd::Timestamp),
        (0usize..70_000).prop_map(Odd::Bytes),
        "\\PC{0,40}".prop_map(Odd::Str),
        Just(Odd::Str("filed".into())),
        Just(Odd::Str("draft".into())),
    ]
}

fn obj_type() -> impl Strategy<Value = ObjType> {
    prop_oneof![
        Just(ObjType::Map),
        Just(ObjType::List),
        Just(ObjType::Text),
        Just(ObjType::Table)
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..4).prop_map(Step::Actor),
        (any::<usize>(), 0..KEYS.len(), odd()).prop_map(|(obj, key, value)| Step::Put {
            obj,
            key,
            value
        }),
        (any::<usize>(), 0..KEYS.len(), obj_type()).prop_map(|(obj, key, ty)| Step::Make {
            obj,
            key,
            ty
        }),
        prop_oneof![1usize..12, 200usize..3_000].prop_map(Step::Nest),
        prop_oneof![1usize..50, 9_000usize..10_500].prop_map(Step::Wide),
        (
            any::<usize>(),
            any::<usize>(),
            0usize..20,
            prop_oneof!["\\PC{0,30}", "[a-z]{2000,20000}"]
        )
            .prop_map(|(text, pos, del, s)| Step::Splice { text, pos, del, s }),
        // NaN as a mark's value too: automerge is built as it ships (Cargo.toml), without the
        // debug assertions that compared marks with `==` and panicked on one (NaN != NaN).
        (
            any::<usize>(),
            "[a-z]{1,12}",
            any::<usize>(),
            any::<usize>(),
            odd()
        )
            .prop_map(|(text, name, start, end, value)| Step::Mark {
                text,
                name,
                start,
                end,
                value
            }),
        (any::<usize>(), any::<usize>(), obj_type()).prop_map(|(text, pos, ty)| Step::InText {
            text,
            pos,
            ty
        }),
        (any::<usize>(), 0..KEYS.len()).prop_map(|(obj, key)| Step::Delete { obj, key }),
        (any::<usize>(), 0..KEYS.len()).prop_map(|(obj, key)| Step::Increment { obj, key }),
    ]
}

fn kind() -> impl Strategy<Value = DocKind> {
    prop_oneof![
        Just(DocKind::Case),
        Just(DocKind::Plan),
        Just(DocKind::Note),
        Just(DocKind::Restricted),
        Just(DocKind::Assessment),
        Just(DocKind::Discharge),
        Just(DocKind::Referral),
        Just(DocKind::Safeguarding)
    ]
}

fn writer() -> Writer {
    Writer {
        staff_id: StaffId(uuid::Uuid::from_u128(7)),
        role: "social_worker".into(),
        org: "Castlebridge Council".into(),
        teams: vec!["Locality Team North".into()],
    }
}

/// A valid document of `kind`, written by the record API as `w`'s device would.
fn valid(kind: DocKind, case: CaseId, w: &Writer) -> AutoCommit {
    let mut d = AutoCommit::new().with_actor(ActorId::random());
    d.set_author(Some(Author::from(w.staff_id.as_bytes().to_vec())));
    match kind {
        DocKind::Case => {
            record::init_case(
                &mut d,
                case,
                &Identity {
                    name: "Fuzz".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        }
        DocKind::Plan => record::init_plan(&mut d, case).unwrap(),
        DocKind::Note => record::init_note(
            &mut d,
            &NewNote {
                case_id: case,
                kind: NoteKind::Visit,
                author: NoteAuthor {
                    staff_id: w.staff_id.to_string(),
                    role: w.role.clone(),
                    org: w.org.clone(),
                    team: w.teams[0].clone(),
                },
                occurred_at_ms: 1_000,
                recorded_at_ms: 1_000,
                text: "Seen.".into(),
                amends: None,
                late_entry_reason: None,
            },
        )
        .unwrap(),
        DocKind::Restricted => {
            d.put(ROOT, "schema", "casenote/restricted/1").unwrap();
            d.put(ROOT, "case_id", case.to_string()).unwrap();
            d.put(ROOT, "title", "Sealed").unwrap();
            d.put_object(ROOT, "narrative", ObjType::Text).unwrap();
        }
        DocKind::Assessment => statutory::init_assessment(&mut d, case, "mca", 1, None).unwrap(),
        DocKind::Discharge => statutory::init_discharge(&mut d, case).unwrap(),
        DocKind::Referral => {
            statutory::init_referral(&mut d, case, "gp", "routine", "Falls").unwrap()
        }
        DocKind::Safeguarding => statutory::init_safeguarding(&mut d, case, "Bruising").unwrap(),
    }
    d.commit();
    d
}

/// Every object of `doc` (explicit stack; the document may be deep), root first, at most `max`.
fn objects(doc: &AutoCommit, max: usize) -> Vec<(ObjId, ObjType)> {
    let mut out = vec![(ROOT, ObjType::Map)];
    let mut i = 0;
    while i < out.len() && out.len() < max {
        let (obj, ty) = out[i].clone();
        i += 1;
        let children: Vec<(ObjId, ObjType)> = match ty {
            ObjType::Map | ObjType::Table => doc
                .map_range(&obj, ..)
                .filter_map(|item| match item.value {
                    automerge::ValueRef::Object(t) => Some((item.id(), t)),
                    _ => None,
                })
                .take(64)
                .collect(),
            ObjType::List | ObjType::Text => doc
                .list_range(&obj, ..)
                .filter_map(|item| match item.value {
                    automerge::ValueRef::Object(t) => Some((item.id(), t)),
                    _ => None,
                })
                .take(64)
                .collect(),
        };
        out.extend(children);
    }
    out
}

/// Applies `step` to `doc`; Automerge's own refusals (a bad index, a wrong object type) are
/// simply steps that did nothing.
fn apply(doc: &mut AutoCommit, step: &Step) {
    let objs = objects(doc, 4_096);
    let pick = |i: usize| objs[i % objs.len()].clone();
    let texts: Vec<ObjId> = objs
        .iter()
        .filter(|(_, t)| *t == ObjType::Text)
        .map(|(o, _)| o.clone())
        .collect();
    let text = |i: usize| texts.get(i % texts.len().max(1)).cloned();
    let _ = match step {
        Step::Actor(_) => Ok(()),
        Step::Put { obj, key, value } => {
            let (o, t) = pick(*obj);
            put(doc, &o, t, KEYS[*key], *key, value.scalar())
        }
        Step::Make { obj, key, ty } => {
            let (o, t) = pick(*obj);
            match t {
                ObjType::Map | ObjType::Table => doc.put_object(&o, KEYS[*key], *ty).map(drop),
                _ => doc.insert_object(&o, 0, *ty).map(drop),
            }
        }
        Step::Nest(depth) => {
            let mut o = doc
                .put_object(ROOT, format!("nest{depth}"), ObjType::Map)
                .unwrap();
            for _ in 1..*depth {
                o = doc.put_object(&o, "m", ObjType::Map).unwrap();
            }
            Ok(())
        }
        Step::Wide(n) => {
            let o = doc
                .put_object(ROOT, format!("wide{n}"), ObjType::Map)
                .unwrap();
            for i in 0..*n {
                doc.put_object(&o, i.to_string(), ObjType::Map).unwrap();
            }
            Ok(())
        }
        Step::Splice {
            text: t,
            pos,
            del,
            s,
        } => match text(*t) {
            Some(o) => {
                let len = doc.length(&o);
                let pos = pos % (len + 1);
                doc.splice_text(&o, pos, (*del).min(len - pos) as isize, s)
            }
            None => Ok(()),
        },
        Step::Mark {
            text: t,
            name,
            start,
            end,
            value,
        } => match text(*t) {
            Some(o) => {
                let len = doc.length(&o).max(1);
                let (a, b) = (start % len, end % len);
                let mark = Mark::new(name.clone(), value.scalar(), a.min(b), a.max(b));
                doc.mark(&o, mark, ExpandMark::Both)
            }
            None => Ok(()),
        },
        Step::InText { text: t, pos, ty } => match text(*t) {
            Some(o) => {
                let len = doc.length(&o);
                doc.insert_object(&o, pos % (len + 1), *ty).map(drop)
            }
            None => Ok(()),
        },
        Step::Delete { obj, key } => {
            let (o, t) = pick(*obj);
            match t {
                ObjType::Map | ObjType::Table => doc.delete(&o, KEYS[*key]),
                _ if doc.length(&o) > 0 => doc.delete(&o, key % doc.length(&o)),
                _ => Ok(()),
            }
        }
        Step::Increment { obj, key } => {
            let (o, t) = pick(*obj);
            match t {
                ObjType::Map | ObjType::Table => doc.increment(&o, KEYS[*key], 1),
                _ => Ok(()),
            }
        }
    };
}

fn put(
    doc: &mut AutoCommit,
    o: &ObjId,
    t: ObjType,
    key: &str,
    index: usize,
    v: ScalarValue,
) -> Result<(), automerge::AutomergeError> {
    match t {
        ObjType::Map | ObjType::Table => doc.put(o, key, v),
        ObjType::List => doc.insert(o, index % (doc.length(o) + 1), v),
        ObjType::Text => Ok(()),
    }
}

/// Runs `steps` over four actors' forks of `base`, merges them, and returns the new changes;
/// `None` when Automerge itself panicked while the fuzzer wrote them (no device could then have
/// sent them).
fn changes_of(base: &AutoCommit, steps: &[Step], w: &Writer) -> Option<Vec<automerge::Change>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write_steps(base, steps, w))).ok()
}

fn write_steps(base: &AutoCommit, steps: &[Step], w: &Writer) -> Vec<automerge::Change> {
    let mut base = base.clone();
    let heads = base.get_heads();
    let mut forks: Vec<AutoCommit> = (0..4)
        .map(|_| {
            let mut f = base.fork().with_actor(ActorId::random());
            f.set_author(Some(Author::from(w.staff_id.as_bytes().to_vec())));
            f
        })
        .collect();
    let mut at = 0;
    for s in steps {
        if let Step::Actor(a) = s {
            forks[at].commit();
            at = *a % forks.len();
            continue;
        }
        apply(&mut forks[at], s);
    }
    let mut merged = base.fork();
    for f in &mut forks {
        f.commit();
        merged.merge(f).unwrap();
    }
    merged.get_changes(&heads)
}

/// Validates and views one generated push; panics only on a broken invariant.
fn check_case(kind: DocKind, steps: Vec<Step>) {
    let w = writer();
    let case = CaseId(uuid::Uuid::from_u128(42));
    let before = valid(kind, case, &w);
    let Some(changes) = changes_of(&before, &steps, &w) else {
        return;
    };
    let ctx = Context {
        kind,
        case_id: case,
        writer: w,
        rules: Rules::default(),
        received_ms: 2_000,
    };
    let stored = before.clone();
    let outcome = validate::run(&ctx, Some(before.clone()), &changes, &mut || {
        Ok(Some(stored.clone()))
    })
    .expect("validation never fails on the store");
    // The views, on what a device could hold either way: the state validated, or the raw merge.
    let mut raw = before.clone();
    raw.apply_changes(changes)
        .expect("the fuzzer's own changes apply");
    let _ = record::content_json(&raw);
    let _ = record::conflicts(&raw);
    let _ = shape::check(&raw);
    if let Ok(passed) = outcome {
        shape::check(&passed.after).expect("an accepted document is within the structure limits");
        let view = record::content_json(&passed.after);
        assert!(
            view.get(WITHHELD).is_none(),
            "an accepted document is withheld"
        );
        let _ = record::conflicts(&passed.after);
    }
}

/// Threads the validation fuzzing runs on, each with its share of the cases: the work is
/// CPU-bound and each case independent, so two cores do it in half the time.
const FUZZ_THREADS: u32 = 2;

#[test]
fn generated_changes_never_crash_validation_or_the_views() {
    let cases = rounds(48, 400) as u32;
    let base = ProptestConfig {
        cases: cases.div_ceil(FUZZ_THREADS),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let threads: Vec<_> = (0..FUZZ_THREADS)
        .map(|t| {
            // A fixed seed (`PROPTEST_RNG_SEED`) gives each thread its own, so they never run
            // the same cases.
            let rng_seed = match base.rng_seed {
                RngSeed::Fixed(seed) => RngSeed::Fixed(seed.wrapping_add(u64::from(t))),
                RngSeed::Random => RngSeed::Random,
            };
            let config = ProptestConfig {
                rng_seed,
                ..base.clone()
            };
            // A small stack: a recursive walk over a deep document overflows it at once.
            std::thread::Builder::new()
                .stack_size(1024 * 1024)
                .spawn(move || {
                    proptest::test_runner::TestRunner::new(config)
                        .run(
                            &(kind(), prop::collection::vec(step(), 1..24)),
                            |(kind, steps)| {
                                check_case(kind, steps);
                                Ok(())
                            },
                        )
                        .unwrap();
                })
                .unwrap()
        })
        .collect();
    for t in threads {
        t.join().expect("no panic and no stack overflow");
    }
}

#[test]
fn generated_pushes_over_http_are_each_answered_and_the_server_keeps_serving() {
    use casenote_protocol::wire::DocPush;
    use casenote_protocol::Seq;
    let (tmp, data, staff) = demo_borough();
    let server = Server::start(&data);
    let token = token_of(&staff, "Priya Shah");
    let priya = Cli::login(tmp.path().join("priya"), &server, &token);
    let case: CaseId = priya
        .ok(&["case", "new", "--name", "Fuzz Person"])
        .parse()
        .unwrap();
    priya.sync();
    let me = raw::staff_id(&server.url, &token);
    let w = Writer {
        staff_id: me,
        ..writer()
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: rounds(12, 60) as u32,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let (answered, accepted) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner
        .run(&prop::collection::vec(step(), 1..16), |steps| {
            let before = valid(DocKind::Note, case, &w);
            let mut all = before.clone();
            let mut changes = all.get_changes(&[]);
            let Some(more) = changes_of(&before, &steps, &w) else {
                return Ok(());
            };
            changes.extend(more);
            all.apply_changes(changes.clone()).unwrap();
            let push = DocPush {
                doc_id: casenote_protocol::DocId::new_random(),
                case_id: case,
                kind: DocKind::Note,
                base: vec![],
                changes: changes
                    .iter()
                    .map(|c| serde_bytes::ByteBuf::from(c.raw_bytes().to_vec()))
                    .collect(),
            };
            match raw::sync(&server.url, &token, Seq(0), vec![push]) {
                Ok(r) => {
                    answered.set(answered.get() + 1);
                    accepted.set(accepted.get() + r.acks.len());
                }
                Err((status, body)) => {
                    assert!(status < 500, "HTTP {status}: {body:?}");
                    answered.set(answered.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    let (answered, accepted) = (answered.get(), accepted.get());
    assert!(answered > 0);
    // The server still serves, and an honest edit still goes through.
    priya.ok(&[
        "note",
        "add",
        &case.to_string(),
        "--text",
        "After the fuzzing.",
    ]);
    let report = priya.sync();
    assert_eq!(
        report["rejections"].as_array().map_or(0, Vec::len),
        0,
        "{report}"
    );
    eprintln!("{answered} generated pushes answered, {accepted} accepted");
}
