//! Every socket's decoder on arbitrary bytes: an error is fine, a panic,
//! an abort or an over-allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orderly_common::protocol::{split_frames, ControlMsg, FanoutMsg, IntakeMsg};

fuzz_target!(|data: &[u8]| {
    let _ = IntakeMsg::decode(data);
    let _ = ControlMsg::decode(data);
    let _ = FanoutMsg::decode(data);
    // The first byte picks a split into frames, to reach split_frames too.
    if let Some((&n, rest)) = data.split_first() {
        let cut = usize::from(n).min(rest.len());
        let frames = vec![rest[..cut].to_vec(), rest[cut..].to_vec()];
        if let Ok((_, body)) = split_frames(&frames) {
            let _ = IntakeMsg::decode(body);
        }
    }
});
