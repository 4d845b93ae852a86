//! Feeds arbitrary bytes to the decode of a peer's version vector, then compares and merges
//! it with itself and with an empty vector: nothing may panic, and the laws hold.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peerfold_protocol::version::{Ordering, VersionVector};
use peerfold_protocol::wire;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = wire::Vector::decode(data) else {
        return;
    };
    let vector = VersionVector::from(&raw);
    assert_eq!(vector.compare(&vector), Ordering::Equal);
    let empty = VersionVector::new();
    assert_eq!(vector.merge(&empty).compare(&vector), Ordering::Equal);
    assert!(matches!(
        empty.compare(&vector),
        Ordering::Equal | Ordering::Older
    ));
    // Back to the wire and again: the same vector.
    assert_eq!(VersionVector::from(&wire::Vector::from(&vector)), vector);
});
