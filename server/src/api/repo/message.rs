//! automerge-repo's network protocol, version "1", as the WebSocket adapter of
//! `@automerge/automerge-repo-network-websocket` speaks it: each WebSocket message is one CBOR
//! map with a `type` (`join`, `peer`, `request`, `sync`, `doc-unavailable`, `error`, and
//! `ephemeral` and the remote-heads messages, which this server ignores), the sender's and
//! target's peer ids, and for document messages the `documentId` and the sync message `data`.
//!
//! Document ids are casenote's 16-byte uuids written as automerge-repo writes them: bs58check
//! of the bytes (`automerge:` + that is a document's URL).
//!
//! Decoding reads only the fields the server uses (`peerMetadata`, whatever a client puts in
//! it, is skipped without being kept), after the WebSocket layer bounded the message's size.

use casenote_protocol::DocId;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The one protocol version the endpoint speaks.
pub const PROTOCOL_V1: &str = "1";

/// The server's peer id on every connection.
pub const SERVER_PEER_ID: &str = "casenote-server";

/// A message from the browser or Node client, as far as the server reads it.
#[derive(Debug, Deserialize)]
pub struct Incoming {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "senderId", default)]
    pub sender_id: Option<String>,
    #[serde(rename = "documentId", default)]
    pub document_id: Option<String>,
    #[serde(default)]
    pub data: Option<ByteBuf>,
    #[serde(rename = "supportedProtocolVersions", default)]
    pub supported: Option<Vec<String>>,
}

/// A message from the server.
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "type")]
pub enum Outgoing {
    #[serde(rename = "peer")]
    Peer {
        #[serde(rename = "senderId")]
        sender_id: &'static str,
        #[serde(rename = "targetId")]
        target_id: String,
        #[serde(rename = "peerMetadata")]
        peer_metadata: PeerMetadata,
        #[serde(rename = "selectedProtocolVersion")]
        selected: &'static str,
    },
    #[serde(rename = "sync")]
    Sync {
        #[serde(rename = "senderId")]
        sender_id: &'static str,
        #[serde(rename = "targetId")]
        target_id: String,
        #[serde(rename = "documentId")]
        document_id: String,
        data: ByteBuf,
    },
    #[serde(rename = "doc-unavailable")]
    Unavailable {
        #[serde(rename = "senderId")]
        sender_id: &'static str,
        #[serde(rename = "targetId")]
        target_id: String,
        #[serde(rename = "documentId")]
        document_id: String,
    },
    #[serde(rename = "error")]
    Error {
        #[serde(rename = "senderId")]
        sender_id: &'static str,
        #[serde(rename = "targetId")]
        target_id: String,
        message: String,
    },
}

/// What the server says of itself in `peer`: ephemeral, so clients keep no sync state for it
/// between connections (the server keeps none either).
#[derive(Debug, Serialize, PartialEq)]
pub struct PeerMetadata {
    #[serde(rename = "isEphemeral")]
    pub is_ephemeral: bool,
}

impl Outgoing {
    pub fn peer(target: &str) -> Self {
        Outgoing::Peer {
            sender_id: SERVER_PEER_ID,
            target_id: target.to_string(),
            peer_metadata: PeerMetadata { is_ephemeral: true },
            selected: PROTOCOL_V1,
        }
    }

    pub fn sync(target: &str, doc: DocId, data: Vec<u8>) -> Self {
        Outgoing::Sync {
            sender_id: SERVER_PEER_ID,
            target_id: target.to_string(),
            document_id: doc_id_to_repo(doc),
            data: ByteBuf::from(data),
        }
    }

    pub fn unavailable(target: &str, doc: &str) -> Self {
        Outgoing::Unavailable {
            sender_id: SERVER_PEER_ID,
            target_id: target.to_string(),
            document_id: doc.to_string(),
        }
    }

    pub fn error(target: &str, message: &str) -> Self {
        Outgoing::Error {
            sender_id: SERVER_PEER_ID,
            target_id: target.to_string(),
            message: message.to_string(),
        }
    }

    /// The message as CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing plain data into a Vec cannot fail.
        ciborium::into_writer(self, &mut out).expect("CBOR into a Vec");
        out
    }
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the message is not a CBOR map of automerge-repo's protocol")]
pub struct Malformed;

/// Decodes one message (its size already bounded by the WebSocket layer).
pub fn decode(bytes: &[u8]) -> Result<Incoming, Malformed> {
    ciborium::from_reader(bytes).map_err(|_| Malformed)
}

/// A casenote document id in automerge-repo's form: bs58check of its 16 bytes.
pub fn doc_id_to_repo(doc: DocId) -> String {
    bs58::encode(doc.0.as_bytes()).with_check().into_string()
}

/// The casenote document id of an automerge-repo document id, if it is one (bs58check of
/// exactly 16 bytes).
pub fn doc_id_from_repo(s: &str) -> Option<DocId> {
    if s.len() > 64 {
        return None;
    }
    let bytes = bs58::decode(s).with_check(None).into_vec().ok()?;
    let bytes: [u8; 16] = bytes.try_into().ok()?;
    Some(DocId(uuid::Uuid::from_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_id_round_trips_through_automerge_repo_form() {
        let doc = DocId(uuid::Uuid::new_v4());
        let repo = doc_id_to_repo(doc);
        assert_eq!(doc_id_from_repo(&repo), Some(doc));
    }

    #[test]
    fn the_form_matches_automerge_repo_for_a_known_id() {
        // automerge-repo 2.5.6: binaryToDocumentId(uuid bytes of this id), computed in Node.
        let doc = DocId("7d2b4bd2-8f7a-4a53-9c0f-1a2b3c4d5e6f".parse().unwrap());
        assert_eq!(doc_id_to_repo(doc), KNOWN_REPO_ID);
    }

    const KNOWN_REPO_ID: &str = "2k9CVDM9BYipGiF3CRJrU9N4iszB";

    #[test]
    fn a_damaged_or_wrong_sized_id_is_not_a_document() {
        let repo = doc_id_to_repo(DocId(uuid::Uuid::new_v4()));
        let mut damaged = repo.clone().into_bytes();
        damaged[3] = if damaged[3] == b'2' { b'3' } else { b'2' };
        assert_eq!(doc_id_from_repo(&String::from_utf8(damaged).unwrap()), None);
        let long = bs58::encode([7u8; 17]).with_check().into_string();
        assert_eq!(doc_id_from_repo(&long), None);
        assert_eq!(doc_id_from_repo("not base58 0OIl"), None);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(decode(&[0xff, 0x00, 0x13]).is_err());
        assert!(decode(&[]).is_err());
    }
}
