//! Device IDs in Syncthing's text form.
//!
//! A device ID is the SHA-256 of the device's certificate (DER). Its text form is the
//! RFC 4648 base32 of those 32 bytes (52 characters, padding removed), cut into four groups
//! of 13 characters, each followed by a check character (Syncthing's "luhn32"), then written
//! as eight dash-separated groups of seven.

use std::fmt;
use std::str::FromStr;

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const RAW_LEN: usize = 52;
const CHECKED_LEN: usize = 56;
const GROUP_LEN: usize = 13;

/// A device's identity: the SHA-256 digest of its certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; 32]);

/// The first 8 bytes of a [`DeviceId`], used in version vectors.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ShortId(pub u64);

/// Why a text could not be read as a device ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    /// Wrong number of characters once dashes and spaces are removed.
    #[error("a device ID has 56 characters (or 52 without check characters), this one has {0}")]
    Length(usize),
    /// A character outside the base32 alphabet.
    #[error("{0:?} is not a valid device ID character (A-Z and 2-7)")]
    Character(char),
    /// A check character does not match its group: the ID was mistyped.
    #[error("check character of group {group} does not match: the ID has a typo")]
    Check {
        /// The 1-based group (of four) whose check character failed.
        group: usize,
    },
}

impl DeviceId {
    /// The device ID of a DER-encoded certificate.
    pub fn from_certificate_der(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut raw = [0u8; 32];
        raw.copy_from_slice(digest.as_ref());
        Self(raw)
    }

    /// Wraps a raw 32-byte digest.
    pub const fn from_bytes(raw: [u8; 32]) -> Self {
        Self(raw)
    }

    /// The raw 32-byte digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The short form used in version vectors: the first 8 bytes, big-endian.
    pub fn short(&self) -> ShortId {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        ShortId(u64::from_be_bytes(first))
    }
}

impl TryFrom<&[u8]> for DeviceId {
    type Error = DeviceIdError;

    fn try_from(raw: &[u8]) -> Result<Self, Self::Error> {
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| DeviceIdError::Length(raw.len()))?;
        Ok(Self(raw))
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = data_encoding::BASE32_NOPAD.encode(&self.0);
        let mut checked = String::with_capacity(CHECKED_LEN);
        for group in base.as_bytes().chunks(GROUP_LEN) {
            // The base32 encoder only emits alphabet characters, so luhn32 cannot fail.
            let check = luhn32(group).map_err(|_| fmt::Error)?;
            checked.extend(group.iter().map(|&b| char::from(b)));
            checked.push(char::from(check));
        }
        for (i, part) in checked.as_bytes().chunks(7).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            // Chunks of an ASCII string are ASCII.
            f.write_str(std::str::from_utf8(part).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

impl FromStr for DeviceId {
    type Err = DeviceIdError;

    /// Parses leniently, as Syncthing does: case-insensitive, dashes and spaces ignored,
    /// trailing `=` trimmed, and the look-alikes `0`, `1`, `8` read as `O`, `I`, `B`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut chars = Vec::with_capacity(CHECKED_LEN);
        for c in text.trim().trim_end_matches('=').chars() {
            let c = match c.to_ascii_uppercase() {
                '-' | ' ' => continue,
                '0' => 'O',
                '1' => 'I',
                '8' => 'B',
                c => c,
            };
            if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
                return Err(DeviceIdError::Character(c));
            }
            chars.push(c as u8);
        }
        let raw_chars = match chars.len() {
            CHECKED_LEN => {
                let mut raw = Vec::with_capacity(RAW_LEN);
                for (i, group) in chars.chunks(GROUP_LEN + 1).enumerate() {
                    let (body, check) = group.split_at(GROUP_LEN);
                    if luhn32(body)? != check[0] {
                        return Err(DeviceIdError::Check { group: i + 1 });
                    }
                    raw.extend_from_slice(body);
                }
                raw
            }
            RAW_LEN => chars,
            n => return Err(DeviceIdError::Length(n)),
        };
        let bytes = data_encoding::BASE32_NOPAD
            .decode(&raw_chars)
            // 52 alphabet characters always decode to 32 bytes; the last character's low
            // bits must be zero, which a typo there can break.
            .map_err(|_| DeviceIdError::Check { group: 4 })?;
        DeviceId::try_from(bytes.as_slice())
    }
}

impl fmt::Display for ShortId {
    /// The first seven base32 characters of the device ID, as Syncthing shows them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = data_encoding::BASE32_NOPAD.encode(&self.0.to_be_bytes());
        f.write_str(&text[..7])
    }
}

/// Syncthing's check character over base32 text: a Luhn variant in base 32 whose factor
/// starts at 1 on the leftmost character. Reproduced exactly; it is not textbook Luhn mod N.
fn luhn32(group: &[u8]) -> Result<u8, DeviceIdError> {
    let mut factor = 1;
    let mut sum = 0usize;
    for &c in group {
        let code = ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or(DeviceIdError::Character(char::from(c)))?;
        let addend = factor * code;
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / 32 + addend % 32;
    }
    Ok(ALPHABET[(32 - sum % 32) % 32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(text: &str) -> [u8; 32] {
        let bytes = data_encoding::HEXLOWER.decode(text.as_bytes()).unwrap();
        bytes.try_into().unwrap()
    }

    #[test]
    fn luhn32_matches_syncthing_vector() {
        assert_eq!(luhn32(b"AB725E4GHIQPL3ZFGT").unwrap(), b'G');
    }

    #[test]
    fn known_vector_from_syncthing_docs() {
        let id = DeviceId::from_bytes(hex(
            "7f7c8723ecca5b4d22061c4981b34c34d865ec376be1eb74330873c9a6f9b205",
        ));
        let text = "P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ2";
        assert_eq!(id.to_string(), text);
        assert_eq!(text.parse::<DeviceId>().unwrap(), id);
        assert_eq!(id.short().to_string(), "P56IOI7");
    }

    #[test]
    fn certificate_fixture_made_by_openssl() {
        // protocol/tests/fixtures/README.md says how these were made outside this code.
        let der = include_bytes!("../tests/fixtures/cert.der");
        let expected = include_str!("../tests/fixtures/cert.device-id").trim();
        let sha = include_str!("../tests/fixtures/cert.sha256").trim();
        let id = DeviceId::from_certificate_der(der);
        assert_eq!(data_encoding::HEXLOWER.encode(id.as_bytes()), sha);
        assert_eq!(id.to_string(), expected);
    }

    #[test]
    fn parsing_is_lenient_like_syncthing() {
        let text = "P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ2";
        let id: DeviceId = text.parse().unwrap();
        let lower = text.to_lowercase();
        assert_eq!(lower.parse::<DeviceId>().unwrap(), id);
        let undashed = text.replace('-', "");
        assert_eq!(undashed.parse::<DeviceId>().unwrap(), id);
        let spaced = text.replace('-', " ");
        assert_eq!(spaced.parse::<DeviceId>().unwrap(), id);
        // Look-alike digits: O typed as 0, I as 1.
        assert_eq!(text.replace('O', "0").parse::<DeviceId>().unwrap(), id);
        assert_eq!(text.replace('I', "1").parse::<DeviceId>().unwrap(), id);
        // Legacy 52-character form without check characters.
        let mut legacy = undashed.clone();
        for i in [55, 41, 27, 13] {
            legacy.remove(i);
        }
        assert_eq!(legacy.parse::<DeviceId>().unwrap(), id);
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        assert_eq!("".parse::<DeviceId>(), Err(DeviceIdError::Length(0)));
        assert_eq!("ABC".parse::<DeviceId>(), Err(DeviceIdError::Length(3)));
        assert_eq!(
            "P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ!".parse::<DeviceId>(),
            Err(DeviceIdError::Character('!'))
        );
        assert_eq!(
            "P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ3".parse::<DeviceId>(),
            Err(DeviceIdError::Check { group: 4 })
        );
    }

    fn any_id() -> impl Strategy<Value = DeviceId> {
        any::<[u8; 32]>().prop_map(DeviceId::from_bytes)
    }

    proptest! {
        #[test]
        fn text_round_trips(id in any_id()) {
            let text = id.to_string();
            prop_assert_eq!(text.len(), 63);
            prop_assert_eq!(text.parse::<DeviceId>().unwrap(), id);
        }

        #[test]
        fn any_single_character_substitution_is_rejected(
            id in any_id(),
            position in 0usize..56,
            replacement in 0usize..32,
        ) {
            let mut chars: Vec<u8> = id.to_string().bytes().filter(|&b| b != b'-').collect();
            let new = ALPHABET[replacement];
            prop_assume!(chars[position] != new);
            chars[position] = new;
            let typo = String::from_utf8(chars).unwrap();
            prop_assert!(typo.parse::<DeviceId>().is_err(), "typo {typo} was accepted");
        }

        #[test]
        fn any_dropped_or_added_character_is_rejected(
            id in any_id(),
            position in 0usize..56,
            extra in 0usize..32,
        ) {
            let chars: Vec<u8> = id.to_string().bytes().filter(|&b| b != b'-').collect();
            let mut dropped = chars.clone();
            dropped.remove(position);
            prop_assert!(String::from_utf8(dropped).unwrap().parse::<DeviceId>().is_err());
            let mut added = chars;
            added.insert(position, ALPHABET[extra]);
            prop_assert!(String::from_utf8(added).unwrap().parse::<DeviceId>().is_err());
        }
    }
}
