//! The statutory record kinds as tables: which fields each holds, of which type, from which
//! vocabulary, and the one walk that checks a document against its table.
//!
//! A table ([`Field`], [`Node`], [`Val`]) says what may stand at each key: a scalar of a kind
//! ([`Val`]), a map of named fields, or a map of entries keyed by uuid whose fields are scalars.
//! The device writes through the tables ([`super::statutory`]) and the server checks every value a
//! push wrote against them (`casenote-server`'s `validate::rules`), so both refuse the same
//! things. [`walk`] keeps an explicit stack: it never recurses over a document, and descends only
//! where the table says a map stands, so its depth is the table's (at most three levels).
//!
//! Every sentence a check returns is fixed: it names the kind and the schema's field, never a key
//! or a value from the document.

use super::vocab;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};

/// What a scalar field may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val {
    /// A short string.
    Str,
    /// Automerge `Text`, merged character by character.
    Text,
    /// An integer (ms since the epoch).
    Int,
    /// A real calendar date, `YYYY-MM-DD`.
    Date,
    /// A date of birth: a date, not before 1900, not in the future.
    Dob,
    /// An NHS number passing the Modulus 11 check.
    Nhs,
    /// One of a vocabulary.
    One(&'static [&'static str]),
}

/// What stands at one key.
#[derive(Clone, Copy, Debug)]
pub enum Node {
    V(Val),
    /// A map of named fields, created with the document.
    Map(&'static [Field]),
    /// A map of entries keyed by uuid, each a map of scalar fields.
    Entries(&'static [(&'static str, Val)]),
    /// Kept by rules of their own (`resolutions`, `schema`, `case_id`): not walked here.
    Any,
}

/// A field of a table: its name and what it holds.
pub type Field = (&'static str, Node);

/// The fields every document has, checked by the server's common rules.
pub const COMMON: &[Field] = &[
    ("schema", Node::Any),
    ("case_id", Node::Any),
    ("resolutions", Node::Any),
];

const fn test(name: &'static str) -> Field {
    (
        name,
        Node::Map(&[
            ("result", Node::V(Val::One(vocab::MCA_TEST_RESULTS))),
            ("evidence", Node::V(Val::Text)),
        ]),
    )
}

const fn outcome(name: &'static str) -> Field {
    (
        name,
        Node::Map(&[
            ("unable_to_achieve", Node::V(Val::One(vocab::YES_NO))),
            ("impact", Node::V(Val::Text)),
        ]),
    )
}

/// Fields of every assessment.
pub const ASSESSMENT: &[Field] = &[
    ("type", Node::V(Val::One(vocab::ASSESSMENT_TYPES))),
    ("status", Node::V(Val::One(vocab::ASSESSMENT_STATUSES))),
    ("started_at_ms", Node::V(Val::Int)),
    ("completed_at_ms", Node::V(Val::Int)),
    ("completed_by", Node::V(Val::Str)),
    (
        "amends",
        Node::Map(&[
            ("assessment_id", Node::V(Val::Str)),
            ("kind", Node::V(Val::One(vocab::AMEND_KINDS))),
            ("reason", Node::V(Val::Str)),
        ]),
    ),
];

/// A mental capacity assessment (Mental Capacity Act 2005 ss2-4): one decision.
pub const MCA: &[Field] = &[
    ("decision", Node::V(Val::Text)),
    ("help_given", Node::V(Val::Text)),
    (
        "stage1",
        Node::Map(&[
            ("impairment", Node::V(Val::One(vocab::YES_NO))),
            ("evidence", Node::V(Val::Text)),
        ]),
    ),
    (
        "tests",
        Node::Map(&[
            test("understand"),
            test("retain"),
            test("use_or_weigh"),
            test("communicate"),
        ]),
    ),
    ("outcome", Node::V(Val::One(vocab::MCA_OUTCOMES))),
    (
        "best_interests",
        Node::Map(&[
            ("wishes_and_beliefs", Node::V(Val::Text)),
            (
                "consulted",
                Node::Entries(&[
                    ("name", Val::Str),
                    ("relationship", Val::Str),
                    ("view", Val::Str),
                ]),
            ),
            ("least_restrictive_option", Node::V(Val::Text)),
            ("rationale", Node::V(Val::Text)),
            ("decision", Node::V(Val::Text)),
        ]),
    ),
];

/// A needs assessment (Care Act 2014 s9), with the ten outcomes of the 2014 Regulations.
pub const NEEDS: &[Field] = &[
    (
        "outcomes",
        Node::Map(&[
            outcome("nutrition"),
            outcome("personal_hygiene"),
            outcome("toilet_needs"),
            outcome("clothing"),
            outcome("home_safety"),
            outcome("habitable_home"),
            outcome("relationships"),
            outcome("work_training_education"),
            outcome("community_services"),
            outcome("caring_for_a_child"),
        ]),
    ),
    (
        "needs_arise_from_impairment",
        Node::V(Val::One(vocab::YES_NO)),
    ),
    (
        "wellbeing_impact",
        Node::V(Val::One(vocab::WELLBEING_IMPACTS)),
    ),
    ("eligible", Node::V(Val::One(vocab::YES_NO))),
];

/// A carer's assessment (Care Act 2014 s10), with the carer's outcomes of the Regulations.
pub const CARERS: &[Field] = &[
    (
        "outcomes",
        Node::Map(&[
            outcome("caring_for_a_child"),
            outcome("other_caring"),
            outcome("home_safety"),
            outcome("nutrition"),
            outcome("habitable_home"),
            outcome("relationships"),
            outcome("work_training_education"),
            outcome("community_services"),
            outcome("recreation"),
        ]),
    ),
    ("needs_arise_from_caring", Node::V(Val::One(vocab::YES_NO))),
    ("health_at_risk", Node::V(Val::One(vocab::YES_NO))),
    (
        "wellbeing_impact",
        Node::V(Val::One(vocab::WELLBEING_IMPACTS)),
    ),
    ("eligible", Node::V(Val::One(vocab::YES_NO))),
];

/// An early help assessment (children and families).
pub const EARLY_HELP: &[Field] = &[
    ("needs", Node::V(Val::Text)),
    ("strengths", Node::V(Val::Text)),
    ("plan", Node::V(Val::Text)),
];

/// A hospital discharge, one per episode.
pub const DISCHARGE: &[Field] = &[
    ("pathway", Node::V(Val::One(vocab::PATHWAYS))),
    ("medically_optimised_date", Node::V(Val::Date)),
    ("expected_discharge_date", Node::V(Val::Date)),
    (
        "equipment",
        Node::Entries(&[
            ("item", Val::Str),
            ("status", Val::One(vocab::EQUIPMENT_STATUSES)),
        ]),
    ),
    ("package_start", Node::V(Val::Date)),
    (
        "day_one_welfare_check",
        Node::Map(&[
            ("due", Node::V(Val::Date)),
            ("done_by", Node::V(Val::Str)),
            ("done_at", Node::V(Val::Date)),
            ("outcome", Node::V(Val::Str)),
        ]),
    ),
];

/// A referral and its triage.
pub const REFERRAL: &[Field] = &[
    ("source", Node::V(Val::One(vocab::REFERRAL_SOURCES))),
    ("urgency", Node::V(Val::One(vocab::REFERRAL_URGENCIES))),
    ("reason", Node::V(Val::Text)),
    (
        "triage_decision",
        Node::V(Val::One(vocab::TRIAGE_DECISIONS)),
    ),
    ("triaged_by", Node::V(Val::Str)),
    ("triaged_at_ms", Node::V(Val::Int)),
];

/// A safeguarding enquiry (Care Act 2014 s42), restricted to its own access list.
pub const SAFEGUARDING: &[Field] = &[
    ("concern", Node::V(Val::Text)),
    ("s42_decision", Node::V(Val::One(vocab::S42_DECISIONS))),
    ("s42_reason", Node::V(Val::Text)),
    ("desired_outcomes", Node::V(Val::Text)),
    ("outcomes_met", Node::V(Val::One(vocab::OUTCOMES_MET))),
    ("enquiry", Node::V(Val::Text)),
    (
        "alleged_source_of_harm",
        Node::Map(&[
            ("relationship", Node::V(Val::Str)),
            ("description", Node::V(Val::Text)),
            ("third_party", Node::V(Val::One(vocab::THIRD_PARTY))),
        ]),
    ),
    ("protection_plan", Node::V(Val::Text)),
];

/// What the statutory rules check of a case document (its other fields have rules of their own).
pub const CASE: &[Field] = &[
    ("nhs_number", Node::V(Val::Nhs)),
    ("dob", Node::V(Val::Dob)),
    (
        "legal_status",
        Node::Entries(&[
            ("kind", Val::One(vocab::LEGAL_KINDS)),
            ("detail", Val::Str),
            ("scope", Val::One(vocab::LPA_SCOPES)),
            ("start", Val::Date),
            ("end", Val::Date),
            ("status", Val::One(vocab::LEGAL_STATUSES)),
        ]),
    ),
    (
        "contacts",
        Node::Entries(&[
            ("role", Val::One(vocab::CONTACT_ROLES)),
            ("name", Val::Str),
            ("relationship", Val::Str),
            ("phone", Val::Str),
            ("may_decide", Val::One(vocab::MAY_DECIDE)),
            ("notes", Val::Str),
        ]),
    ),
];

/// One kind's table: its name in sentences, its fields, and whether a root key outside them is
/// refused (the case document has other fields, kept by rules of their own).
#[derive(Clone, Copy, Debug)]
pub struct Table {
    pub kind: &'static str,
    pub parts: [&'static [Field]; 3],
    pub strict: bool,
}

/// The table of an assessment of type `ty` (an unknown type: the common fields only, so that
/// every type-specific field is refused).
pub fn assessment_table(ty: Option<&str>) -> Table {
    let own: &'static [Field] = match ty {
        Some("mca") => MCA,
        Some("needs") => NEEDS,
        Some("carers") => CARERS,
        Some("early_help") => EARLY_HELP,
        _ => &[],
    };
    Table {
        kind: "assessment",
        parts: [COMMON, ASSESSMENT, own],
        strict: true,
    }
}

/// A strict table of one part.
pub const fn table(kind: &'static str, fields: &'static [Field]) -> Table {
    Table {
        kind,
        parts: [COMMON, fields, &[]],
        strict: true,
    }
}

/// The case document's checked fields (not strict).
pub const CASE_TABLE: Table = Table {
    kind: "case",
    parts: [COMMON, CASE, &[]],
    strict: false,
};

impl Table {
    /// What stands at root key `key`, if the table names it.
    pub fn find(&self, key: &str) -> Option<Node> {
        self.parts
            .iter()
            .flat_map(|p| p.iter())
            .find(|(k, _)| *k == key)
            .map(|(_, n)| *n)
    }

    /// The node at a path of field names (an entry's id stands for any key of an entries map),
    /// and the static names of the path as the schema spells them.
    pub fn resolve(&self, path: &[&str]) -> Option<(Node, Vec<&'static str>)> {
        let (first, rest) = path.split_first()?;
        let mut node = self.find(first)?;
        let mut names = vec![self.name_of(first)?];
        let mut i = 0;
        while i < rest.len() {
            match node {
                Node::Map(fields) => {
                    let (k, n) = fields.iter().find(|(k, _)| *k == rest[i])?;
                    names.push(k);
                    node = *n;
                    i += 1;
                }
                Node::Entries(fields) => {
                    // rest[i] is the entry id; rest[i + 1] the entry's field.
                    let (k, v) = fields.iter().find(|(k, _)| Some(k) == rest.get(i + 1))?;
                    names.push(k);
                    node = Node::V(*v);
                    i += 2;
                }
                Node::V(_) | Node::Any => return None,
            }
        }
        Some((node, names))
    }

    fn name_of(&self, key: &str) -> Option<&'static str> {
        self.parts
            .iter()
            .flat_map(|p| p.iter())
            .find(|(k, _)| *k == key)
            .map(|(k, _)| *k)
    }
}

/// Why `v` may not stand where the table says `val`, if it may not: a fixed sentence naming the
/// kind and the field. `today_ms` judges a date of birth.
pub fn val_problem(
    kind: &str,
    field: &str,
    val: Val,
    v: &Value<'_>,
    today_ms: i64,
) -> Option<String> {
    let s = match v {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.as_str()),
            _ => None,
        },
        _ => None,
    };
    let need = match val {
        Val::Text => {
            return (!matches!(v, Value::Object(ObjType::Text)))
                .then(|| format!("the {kind}'s {field} must be a text"))
        }
        Val::Int => {
            let int = matches!(v, Value::Scalar(s) if matches!(s.as_ref(), ScalarValue::Int(_) | ScalarValue::Uint(_) | ScalarValue::Timestamp(_)));
            return (!int).then(|| format!("the {kind}'s {field} must be an integer"));
        }
        Val::Str => {
            return s
                .is_none()
                .then(|| format!("the {kind}'s {field} must be a string"))
        }
        Val::Date => {
            return (!s.is_some_and(vocab::date_is_valid)).then(|| {
                format!("the {kind}'s {field} must be a real calendar date written YYYY-MM-DD")
            })
        }
        Val::Dob => {
            let problem = match s {
                Some(s) => vocab::dob_problem(s, today_ms),
                None => Some("a date of birth is a real calendar date written YYYY-MM-DD"),
            };
            return problem.map(|p| format!("the {kind}'s {field} is refused: {p}"));
        }
        Val::Nhs => {
            return (!s.is_some_and(crate::nhs::nhs_number_is_valid)).then(|| {
                format!(
                    "the {kind}'s {field} must be a ten-digit NHS number passing the Modulus 11 \
                     check"
                )
            })
        }
        Val::One(allowed) => allowed,
    };
    (!s.is_some_and(|s| need.contains(&s)))
        .then(|| format!("the {kind}'s {field} must be one of: {}", need.join(", ")))
}

/// One place [`walk`] visits: a value at a key, what the table says stands there (`None`: a key
/// the table does not name), and the schema's name of the field (for an unknown key, the name of
/// the map holding it).
pub struct Visit<'a> {
    pub id: &'a ObjId,
    pub value: &'a Value<'a>,
    pub node: Option<Node>,
    pub field: &'static str,
    /// The value is an entry of an entries map (keyed by uuid).
    pub entry: bool,
}

/// What a stack frame of [`walk`] is inside.
#[derive(Clone, Copy)]
enum Frame {
    Root,
    Fields(&'static [Field], &'static str),
    Entries(&'static [(&'static str, Val)], &'static str),
    Entry(&'static [(&'static str, Val)], &'static str),
}

/// Visits every value the table covers (every concurrent value of each key), depth first with an
/// explicit stack, descending only into maps where the table says a map stands. At a root key
/// the table does not name, a non-strict table visits nothing. Stops at the first error.
pub fn walk(
    doc: &AutoCommit,
    table: &Table,
    visit: &mut dyn FnMut(Visit<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut stack: Vec<(ObjId, Frame)> = vec![(ROOT, Frame::Root)];
    while let Some((obj, frame)) = stack.pop() {
        for key in doc.keys(&obj).collect::<Vec<String>>() {
            let (node, field) = match frame {
                Frame::Root => match table.find(&key) {
                    Some(n) => (Some(n), table.name_of(&key).unwrap_or("field")),
                    None if table.strict => (None, "root"),
                    None => continue,
                },
                Frame::Fields(fields, parent) => match fields.iter().find(|(k, _)| *k == key) {
                    Some((k, n)) => (Some(*n), *k),
                    None => (None, parent),
                },
                Frame::Entries(fields, parent) => (Some(Node::Entries(fields)), parent),
                Frame::Entry(fields, parent) => match fields.iter().find(|(k, _)| *k == key) {
                    Some((k, v)) => (Some(Node::V(*v)), *k),
                    None => (None, parent),
                },
            };
            for (value, id) in doc.get_all(&obj, key.as_str()).unwrap_or_default() {
                visit(Visit {
                    id: &id,
                    value: &value,
                    node,
                    field,
                    entry: matches!(frame, Frame::Entries(..)),
                })?;
                let is_map = matches!(value, Value::Object(ObjType::Map));
                match (node, frame) {
                    // An entry of an entries map: its fields.
                    (Some(Node::Entries(fields)), Frame::Entries(..)) if is_map => {
                        stack.push((id.clone(), Frame::Entry(fields, field)))
                    }
                    (Some(Node::Entries(fields)), _) if is_map => {
                        stack.push((id.clone(), Frame::Entries(fields, field)))
                    }
                    (Some(Node::Map(fields)), _) if is_map => {
                        stack.push((id.clone(), Frame::Fields(fields, field)))
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Why a value found by [`walk`] is refused, if it is: a key the table does not name, an object
/// where a scalar stands (or the reverse), a value outside its vocabulary or form.
pub fn visit_problem(kind: &str, v: &Visit<'_>, today_ms: i64) -> Option<String> {
    match v.node {
        None => Some(format!(
            "the {kind}'s {} holds only the fields of the schema",
            v.field
        )),
        Some(Node::V(val)) => val_problem(kind, v.field, val, v.value, today_ms),
        Some(Node::Map(_)) | Some(Node::Entries(_)) => {
            (!matches!(v.value, Value::Object(ObjType::Map))).then(|| {
                if v.entry {
                    format!("every entry of the {kind}'s {} must be a map", v.field)
                } else {
                    format!("the {kind}'s {} must be a map", v.field)
                }
            })
        }
        Some(Node::Any) => None,
    }
}
