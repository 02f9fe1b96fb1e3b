//! What a peer payload is: a raft-rs message (protobuf) as it always was,
//! or an orderly frame of its own kind (today: a chunk of a snapshot,
//! which raft-rs carries as one message but a member's state is too large
//! for). An orderly frame starts with the byte 0x00: a protobuf message
//! never does (0x00 would be field number 0, which protobuf forbids), so
//! raft messages travel unchanged and members of the previous version
//! still understand each other's raft messages.

/// First byte of an orderly frame.
pub const FRAME_PREFIX: u8 = 0x00;

/// Kinds of orderly frames (the byte after the prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A chunk of a snapshot stream (leader to follower).
    SnapshotChunk = 1,
}

/// A payload, told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A raft-rs message (protobuf).
    Raft(&'a [u8]),
    /// An orderly frame of a known kind and its body.
    Frame(Kind, &'a [u8]),
    /// An orderly frame of a kind this version does not know.
    Unknown(u8),
}

/// An orderly frame's payload: prefix, kind, body.
pub fn wrap(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(body.len() + 2);
    payload.extend_from_slice(&[FRAME_PREFIX, kind as u8]);
    payload.extend_from_slice(body);
    payload
}

/// Tells a payload apart.
pub fn unwrap(payload: &[u8]) -> Payload<'_> {
    match payload {
        [FRAME_PREFIX, kind, body @ ..] if *kind == Kind::SnapshotChunk as u8 => {
            Payload::Frame(Kind::SnapshotChunk, body)
        }
        [FRAME_PREFIX, kind, ..] => Payload::Unknown(*kind),
        [FRAME_PREFIX] => Payload::Unknown(0),
        raft => Payload::Raft(raft),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_raft_messages_are_told_apart() {
        let chunk = wrap(Kind::SnapshotChunk, b"data");
        assert_eq!(unwrap(&chunk), Payload::Frame(Kind::SnapshotChunk, b"data"));
        assert_eq!(unwrap(&[0x00, 9, 1]), Payload::Unknown(9));
        // A protobuf message starts with a field key, never 0x00; an empty
        // raft message (all defaults) is empty.
        assert_eq!(unwrap(&[0x08, 3]), Payload::Raft(&[0x08, 3]));
        assert_eq!(unwrap(&[]), Payload::Raft(&[]));
    }
}
