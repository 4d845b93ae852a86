//! Feeds arbitrary bytes to the relay protocol's decoder (header, then body), as a relay
//! server reads them from any client: nothing may panic, and an accepted message must
//! encode back to something that decodes to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peerfold_protocol::relay::{self, HEADER_LEN, Message};

fuzz_target!(|data: &[u8]| {
    let Some((header, body)) = data.split_first_chunk::<HEADER_LEN>() else {
        return;
    };
    let Ok((_, len)) = relay::parse_header(header) else {
        return;
    };
    let Some(body) = body.get(..len) else {
        return;
    };
    let Ok(message) = Message::decode(header, body) else {
        return;
    };
    let again = message.encode();
    let (header, body) = again.split_first_chunk::<HEADER_LEN>().unwrap();
    assert_eq!(Message::decode(header, body).unwrap(), message);
});
