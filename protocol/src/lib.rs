//! casenote-protocol: everything the device and the server must agree on.
//!
//! The wire types and their versioned CBOR envelope ([`wire`]), the ids ([`ids`]), every limit with
//! its reason ([`limits`]), the stable error codes ([`error`]) and the shape of each record kind as
//! an Automerge document ([`record`]), with the bounds every walk over a document relies on
//! ([`shape`]), what an Automerge chunk a peer sent would cost to parse, read before automerge
//! parses it ([`chunk`]), and the check of an NHS number's form ([`nhs`]). It knows nothing of tokio, sled
//! or HTTP, so both sides (and the fuzz harnesses) can link it without dragging a runtime along.

pub mod chunk;
pub mod error;
pub mod ids;
pub mod limits;
pub mod nhs;
pub mod record;
pub mod shape;
pub mod wire;

pub use error::{ErrorBody, ErrorCode};
pub use ids::{CaseId, DeviceId, DocId, DocKind, OrgId, Seq, StaffId, TeamId};
