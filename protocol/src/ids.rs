//! Newtypes for every id that crosses the wire, so a case id can never be passed as a doc id.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }
            /// The sixteen bytes of the id, as used in store keys.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
            /// Reads an id back from the sixteen bytes of a store key.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Uuid::from_slice(bytes).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim()).map(Self)
            }
        }
    )*};
}

uuid_id! {
    /// One Automerge document: the unit of replication, access control and deletion.
    DocId,
    /// One person's record; a case owns several documents.
    CaseId,
    /// A member of staff.
    StaffId,
    /// An enrolled device (phone, tablet, laptop); each has its own token.
    DeviceId,
    /// A team (Locality Team North, Ward 7, ...).
    TeamId,
    /// An organisation, a separate data controller (the council, the NHS trust).
    OrgId,
}

/// A position in the server's global change log. Every stored change gets the next one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a document holds; fixed when it is created and kept in the server-side header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    /// Identity, About Me, alerts, team around the person. Co-edited.
    Case,
    /// One case note: a draft, then filed and never changed again.
    Note,
    /// The care and support (or discharge) plan. Co-edited by several teams.
    Plan,
    /// A sealed section (safeguarding) with its own access list.
    Restricted,
    /// One assessment (mental capacity, Care Act needs or carer's, early help): co-edited while
    /// in progress, never changed once completed.
    Assessment,
    /// A safeguarding enquiry (Care Act s42): restricted, with its own access list.
    Safeguarding,
    /// One hospital discharge episode. Co-edited.
    Discharge,
    /// A referral and its triage. Co-edited.
    Referral,
}

impl DocKind {
    /// The lower-case name used on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Case => "case",
            DocKind::Note => "note",
            DocKind::Plan => "plan",
            DocKind::Restricted => "restricted",
            DocKind::Assessment => "assessment",
            DocKind::Safeguarding => "safeguarding",
            DocKind::Discharge => "discharge",
            DocKind::Referral => "referral",
        }
    }

    /// Whether documents of this kind carry their own access list (the teams that may read and
    /// write them, fixed by the server at creation), on top of the case's team check.
    pub fn is_restricted(self) -> bool {
        matches!(self, DocKind::Restricted | DocKind::Safeguarding)
    }
}

impl fmt::Display for DocKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
