//! The wire decoder is total, and whatever it accepts re-encodes to a frame that decodes to the
//! same envelope (floats compared by bits, so NaN payloads count as equal).
#![no_main]

use gradmesh_protocol::wire::{Body, Contribution, Envelope, Reduced, decode, encode};
use libfuzzer_sys::fuzz_target;

fn float_bits(envelope: &Envelope) -> Vec<u32> {
    match &envelope.body {
        Body::Contribution(Contribution { data, .. }) | Body::Reduced(Reduced { data, .. }) => {
            data.iter().map(|f| f.to_bits()).collect()
        }
        _ => Vec::new(),
    }
}

fuzz_target!(|frame: &[u8]| {
    let Ok(first) = decode(frame, 1 << 24) else {
        return;
    };
    let again = encode(&first).expect("a decoded envelope re-encodes");
    let second = decode(&again, usize::MAX).expect("a re-encoded envelope decodes");
    assert_eq!(float_bits(&first), float_bits(&second));
    assert_eq!(again, encode(&second).expect("re-encodes"));
});
