//! Feeds arbitrary bytes to what a peer's index batch goes through: the protobuf decode of
//! an `Index` and each `FileInfo`'s conversion into an index entry. Nothing may panic, and an
//! entry that was accepted must survive the way back to the wire unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peerfold_engine::model::entry::FileEntry;
use peerfold_protocol::wire;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(index) = wire::Index::decode(data) else {
        return;
    };
    for info in index.files {
        if let Ok(entry) = FileEntry::from_wire(info) {
            let again = FileEntry::from_wire(entry.to_wire()).expect("an accepted entry converts back");
            assert_eq!(again, entry);
        }
    }
});
