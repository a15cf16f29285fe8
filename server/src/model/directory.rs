//! The directory's records: organisations, teams, staff with their roles, enrolled devices and
//! the hashes of their tokens. Plain data: who may see what is decided from these in
//! [`crate::access`], and they are written only through [`crate::admin`] and [`crate::auth`].

use casenote_protocol::{DeviceId, OrgId, StaffId, TeamId};
use serde::{Deserialize, Serialize};

/// A separate data controller (the council, the NHS trust).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub org_id: OrgId,
    pub name: String,
}

/// A team within an organisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub team_id: TeamId,
    pub org_id: OrgId,
    pub name: String,
}

/// What a member of staff does. Stored (CBOR) and shown (JSON) as its snake_case name, the
/// strings the directory has always held (`social_worker`, `nurse`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    SocialWorker,
    Nurse,
    OccupationalTherapist,
    Gp,
    TeamManager,
    /// Manages the service and reads no records ([`crate::access`]).
    Admin,
    Psychiatrist,
    Amhp,
    FamilySupportWorker,
}

impl Role {
    /// Every role, in the order the CLI lists them.
    pub const ALL: [Role; 9] = [
        Role::SocialWorker,
        Role::Nurse,
        Role::OccupationalTherapist,
        Role::Gp,
        Role::TeamManager,
        Role::Admin,
        Role::Psychiatrist,
        Role::Amhp,
        Role::FamilySupportWorker,
    ];

    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::SocialWorker => "social_worker",
            Role::Nurse => "nurse",
            Role::OccupationalTherapist => "occupational_therapist",
            Role::Gp => "gp",
            Role::TeamManager => "team_manager",
            Role::Admin => "admin",
            Role::Psychiatrist => "psychiatrist",
            Role::Amhp => "amhp",
            Role::FamilySupportWorker => "family_support_worker",
        }
    }

    /// Every role's name, comma-separated (for messages that say what is valid).
    pub fn names() -> String {
        Role::ALL.map(Role::as_str).join(", ")
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; valid roles are: {roles}", roles = Role::names())]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// A member of staff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staff {
    pub staff_id: StaffId,
    pub name: String,
    pub role: Role,
    pub org_id: OrgId,
    pub teams: Vec<TeamId>,
    /// A revoked member of staff (a leaver): every token of theirs answers `device_revoked`.
    #[serde(default)]
    pub revoked: bool,
}

/// An enrolled device. Its token is stored only as a hash ([`TokenRecord`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub device_id: DeviceId,
    pub staff_id: StaffId,
    pub name: String,
    pub created_ms: i64,
    pub revoked: bool,
    /// The sha256 of the device's token (hex), so that revoking the device can find it.
    pub token_sha256: String,
}

/// What a bearer token maps to. The token itself is never stored, only its sha256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub device_id: DeviceId,
    pub staff_id: StaffId,
    pub revoked: bool,
}

/// The meta key of the open subject access requests (`crate::subject_access`).
pub const SUBJECT_ACCESS_OPEN_KEY: &str = "subject_access_open";

/// The store's meta value holding the admin tokens (a JSON list of [`AdminToken`]).
pub const ADMIN_TOKENS_KEY: &str = "admin_tokens";

/// An admin token: who may use the admin API (`/v1/admin/...`). Separate from device tokens: it
/// belongs to no member of staff and no device, opens no record, and a device token is never one.
/// Only its sha256 is stored; `admin_id` is what audit entries name (`By::Admin`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    pub admin_id: uuid::Uuid,
    /// A label the operator chose (`ops-rota`); shown by `admin list`, never logged or audited.
    pub name: String,
    pub created_ms: i64,
    pub revoked: bool,
    /// The sha256 of the token (hex).
    pub token_sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_is_stored_as_the_string_it_always_was_and_an_unknown_one_names_the_valid_ones() {
        for role in Role::ALL {
            let cbor = casenote_protocol::wire::encode(&role);
            let as_string = casenote_protocol::wire::encode(&role.as_str());
            assert_eq!(cbor, as_string, "{role}");
            let back: Role = ciborium::de::from_reader(&as_string[..]).unwrap();
            assert_eq!(back, role);
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        let err = "wizard".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("wizard"));
        assert!(err.contains("social_worker") && err.contains("family_support_worker"));
    }
}
