//! Arbitrary bytes into the frame decoder: it must never panic, and whatever it accepts must
//! re-encode to exactly the bytes it was decoded from.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use logcluster_node::log::frame;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(header) = frame::decode(&bytes) {
        let mut again = Vec::new();
        frame::encode_into(&header.entry(&bytes), &mut again);
        assert_eq!(&again[..], &bytes[..header.frame_len as usize]);
    }
});
