//! `ste_core::envelope`: the decoder of the bytes the router reads back from
//! shards (which anyone who can write to a shard's etcd controls).
//!
//! Asserts: decoding never panics; whatever decodes re-encodes to exactly
//! the input bytes and decodes equal again (the format has one encoding);
//! each error matches the decoding order the module documents (magic,
//! version byte, length, field rules); and an envelope built from arbitrary
//! fields round-trips exactly when it passes `validate`.

use ste_core::envelope::{Envelope, EnvelopeError, FORMAT_VERSION, HEADER_LEN, MAGIC};
use ste_core::revision::GlobalRevision;

/// Runs every property on `data`.
pub fn check(data: &[u8]) {
    check_decode(data);
    check_fields(data);
}

fn check_decode(data: &[u8]) {
    match Envelope::decode(data) {
        Ok(envelope) => {
            assert_eq!(envelope.validate(), Ok(()));
            assert_eq!(envelope.encoded_len(), data.len());
            let encoded = envelope.encode();
            assert_eq!(encoded, data, "decode then encode is not the identity");
            assert_eq!(Envelope::decode(&encoded), Ok(envelope));
        }
        Err(EnvelopeError::BadMagic) => {
            let n = data.len().min(MAGIC.len());
            assert_ne!(data[..n], MAGIC[..n], "BadMagic for a matching magic");
        }
        Err(EnvelopeError::UnsupportedVersion(version)) => {
            assert!(data.starts_with(&MAGIC));
            assert_eq!(data[MAGIC.len()], version);
            assert_ne!(version, FORMAT_VERSION);
        }
        Err(EnvelopeError::TooShort { len }) => {
            assert_eq!(len, data.len());
            assert!(len < HEADER_LEN);
            assert!(MAGIC.starts_with(&data[..len.min(MAGIC.len())]));
        }
        Err(EnvelopeError::Invalid(_)) => {
            assert!(data.len() >= HEADER_LEN && data.starts_with(&MAGIC));
            assert_eq!(data[MAGIC.len()], FORMAT_VERSION);
        }
    }
}

/// The first 32 bytes as the four header fields, the rest as the payload.
fn check_fields(data: &[u8]) {
    let Some((fields, payload)) = data.split_first_chunk::<32>() else {
        return;
    };
    let field = |i: usize| {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&fields[i * 8..i * 8 + 8]);
        i64::from_be_bytes(raw)
    };
    let envelope = Envelope {
        create: GlobalRevision(field(0)),
        modified: GlobalRevision(field(1)),
        version: field(2),
        lease: field(3),
        payload,
    };
    let encoded = envelope.encode();
    assert_eq!(encoded.len(), HEADER_LEN + payload.len());
    match envelope.validate() {
        Ok(()) => assert_eq!(Envelope::decode(&encoded), Ok(envelope)),
        Err(error) => assert_eq!(Envelope::decode(&encoded), Err(error)),
    }
}
