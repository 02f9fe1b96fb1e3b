//! The peer frame: one ZeroMQ frame per message.
//!
//! ```text
//! byte 0     version (1)
//! bytes 1-8  sender's member id, u64 big-endian (trusted only without CURVE)
//! bytes 9-   payload (opaque: raft's protobuf messages)
//! ```
//!
//! The version byte lets a later format coexist with this one during a
//! rolling upgrade; a receiver drops (and counts) versions it does not know.

use crate::core::members::MemberId;
use crate::limits::PEER_PAYLOAD_BYTES_MAX;

/// The frame format this code writes and reads.
pub const FRAME_VERSION: u8 = 1;
/// Version byte and sender id.
pub const FRAME_HEADER_BYTES: usize = 1 + 8;

/// Why a frame was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is shorter than its {FRAME_HEADER_BYTES}-byte header")]
    Short { len: usize },
    #[error("frame version {0} is not {FRAME_VERSION}")]
    Version(u8),
    #[error("frame names member 0, which no member is")]
    NoSender,
    #[error("payload of {len} bytes is over the {PEER_PAYLOAD_BYTES_MAX}-byte limit")]
    TooLarge { len: usize },
}

/// The frame carrying `payload` from member `from`.
pub fn encode(from: MemberId, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.len() > PEER_PAYLOAD_BYTES_MAX {
        return Err(FrameError::TooLarge { len: payload.len() });
    }
    let mut frame = start(from, payload.len());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// A frame's header from member `from`, with room for `payload_bytes`
/// more: the caller writes the payload after it in place (see
/// [`finish`]), so a payload built for one frame is not copied again.
pub fn start(from: MemberId, payload_bytes: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload_bytes);
    frame.push(FRAME_VERSION);
    frame.extend_from_slice(&from.get().to_be_bytes());
    frame
}

/// Checks a frame begun with [`start`] and written after its header:
/// the same limit as [`encode`].
pub fn finish(frame: Vec<u8>) -> Result<Vec<u8>, FrameError> {
    let len = frame.len().saturating_sub(FRAME_HEADER_BYTES);
    if len > PEER_PAYLOAD_BYTES_MAX {
        return Err(FrameError::TooLarge { len });
    }
    Ok(frame)
}

/// The claimed sender and the payload of a frame.
pub fn decode(frame: &[u8]) -> Result<(MemberId, &[u8]), FrameError> {
    if frame.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Short { len: frame.len() });
    }
    if frame[0] != FRAME_VERSION {
        return Err(FrameError::Version(frame[0]));
    }
    let payload = &frame[FRAME_HEADER_BYTES..];
    if payload.len() > PEER_PAYLOAD_BYTES_MAX {
        return Err(FrameError::TooLarge { len: payload.len() });
    }
    let id: [u8; 8] = frame[1..FRAME_HEADER_BYTES].try_into().expect("header is 9 bytes");
    let from = MemberId::new(u64::from_be_bytes(id)).ok_or(FrameError::NoSender)?;
    Ok((from, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> MemberId {
        MemberId::new(n).unwrap()
    }

    /// A frame written in place is the frame `encode` makes, and is held
    /// to the same limit.
    #[test]
    fn a_frame_written_in_place_is_the_same_frame() {
        for payload in [&b""[..], b"x", &[0xff; 300]] {
            let mut frame = start(id(258), payload.len());
            frame.extend_from_slice(payload);
            assert_eq!(finish(frame), encode(id(258), payload));
        }
        let mut frame = start(id(2), 0);
        frame.resize(FRAME_HEADER_BYTES + PEER_PAYLOAD_BYTES_MAX + 1, 0);
        assert_eq!(finish(frame), Err(FrameError::TooLarge { len: PEER_PAYLOAD_BYTES_MAX + 1 }));
    }

    #[test]
    fn frames_round_trip() {
        for payload in [&b""[..], b"x", &[0xff; 300]] {
            let frame = encode(id(258), payload).unwrap();
            assert_eq!(frame[..FRAME_HEADER_BYTES], [1, 0, 0, 0, 0, 0, 0, 1, 2]);
            assert_eq!(decode(&frame), Ok((id(258), payload)));
        }
        let largest = vec![7; PEER_PAYLOAD_BYTES_MAX];
        assert_eq!(decode(&encode(id(u64::MAX), &largest).unwrap()), Ok((id(u64::MAX), &largest[..])));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert_eq!(decode(b""), Err(FrameError::Short { len: 0 }));
        assert_eq!(decode(&[1, 0, 0, 0, 0, 0, 0, 0]), Err(FrameError::Short { len: 8 }));
        assert_eq!(decode(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 9]), Err(FrameError::Version(2)));
        assert_eq!(decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 9]), Err(FrameError::NoSender));
        let mut over = encode(id(1), &[]).unwrap();
        over.resize(FRAME_HEADER_BYTES + PEER_PAYLOAD_BYTES_MAX + 1, 0);
        assert_eq!(decode(&over), Err(FrameError::TooLarge { len: PEER_PAYLOAD_BYTES_MAX + 1 }));
        assert_eq!(encode(id(1), &over), Err(FrameError::TooLarge { len: over.len() }));
        // Every prefix of a good frame, and every byte flipped in its
        // header, decodes to a value or an error: never a panic.
        let good = encode(id(3), b"payload").unwrap();
        for end in 0..good.len() {
            let _ = decode(&good[..end]);
        }
        for at in 0..FRAME_HEADER_BYTES {
            let mut bad = good.clone();
            bad[at] ^= 0xff;
            let _ = decode(&bad);
        }
    }
}
