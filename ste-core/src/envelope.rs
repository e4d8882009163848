//! The on-shard value format: every value the router writes to a shard is
//! wrapped in an envelope carrying the key's *global* metadata.
//!
//! A shard's own `create_revision`/`mod_revision`/`version` are in the
//! shard's revision space and restart when a key moves between shards, so
//! they cannot be shown to clients. The router is the only writer to shards,
//! so it stores the global metadata next to the payload, where a restart or
//! a key migration finds it again.
//!
//! # Format (stable, version 1)
//!
//! All integers are big-endian, two's complement.
//!
//! | offset | length | field                                         |
//! |-------:|-------:|-----------------------------------------------|
//! |      0 |      3 | magic `b"STE"`                                |
//! |      3 |      1 | format version, `1`                           |
//! |      4 |      8 | create revision (global), `i64`, `>= 1`       |
//! |     12 |      8 | mod revision (global), `i64`, `>= create`     |
//! |     20 |      8 | version (writes since creation), `i64`, `>= 1`|
//! |     28 |      8 | lease ID, `i64`, `0` = no lease               |
//! |     36 |   rest | payload: the client's value, verbatim         |
//!
//! The header is [`HEADER_LEN`] = 36 bytes. This layout is persisted on
//! shards, so it may never change meaning: a new layout gets a new version
//! byte, and decoders keep reading old versions.
//!
//! # Decoding order
//!
//! [`Envelope::decode`] checks the magic on as many of its 3 bytes as are
//! present *before* the length, so a short foreign value (one the router
//! did not write) is reported as [`EnvelopeError::BadMagic`], and
//! [`EnvelopeError::TooShort`] means "starts like an envelope but is
//! truncated". Then the version byte, then the length, then the field rules.

use thiserror::Error;

use crate::GlobalRevision;

/// The first three bytes of every envelope.
pub const MAGIC: [u8; 3] = *b"STE";

/// The format version this module writes, and the only one it reads.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before the payload: magic, version byte and four `i64` fields.
pub const HEADER_LEN: usize = 36;

/// Why bytes read from a shard are not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// Shorter than [`HEADER_LEN`] although the magic matched so far.
    #[error("envelope truncated: {len} bytes, header needs {HEADER_LEN}")]
    TooShort {
        /// The length of the bytes given.
        len: usize,
    },

    /// Does not start with [`MAGIC`]: not written by the router.
    #[error("not an STE envelope (bad magic)")]
    BadMagic,

    /// A format version this build does not know (written by a newer STE).
    #[error("unsupported envelope format version {0}")]
    UnsupportedVersion(u8),

    /// The header decoded but breaks a field rule (see [`Envelope::validate`]).
    #[error("invalid envelope: {0}")]
    Invalid(&'static str),
}

/// A decoded envelope, borrowing its payload from the shard's bytes.
///
/// The fields are public so the router can build one directly; an envelope
/// it writes should pass [`Envelope::validate`], because
/// [`Envelope::decode`] refuses any that does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Envelope<'a> {
    /// Global revision of the write that created the key (this incarnation).
    pub create: GlobalRevision,
    /// Global revision of the latest write to the key.
    pub modified: GlobalRevision,
    /// Number of writes since creation, 1 for a new key (etcd's `version`).
    pub version: i64,
    /// The etcd lease ID attached to the key, 0 for none.
    pub lease: i64,
    /// The client's value, exactly as given.
    pub payload: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// The length of [`Envelope::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// The envelope in the stable format (see the module doc).
    ///
    /// Encoding does not validate; call [`Envelope::validate`] first if the
    /// fields come from anywhere but the router's own bookkeeping.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded envelope to `out`, so a caller can reuse buffers.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.create.0.to_be_bytes());
        out.extend_from_slice(&self.modified.0.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.lease.to_be_bytes());
        out.extend_from_slice(self.payload);
    }

    /// Decodes and validates `bytes` without copying the payload.
    pub fn decode(bytes: &'a [u8]) -> Result<Envelope<'a>, EnvelopeError> {
        let magic_len = bytes.len().min(MAGIC.len());
        if bytes[..magic_len] != MAGIC[..magic_len] {
            return Err(EnvelopeError::BadMagic);
        }
        if let Some(&version) = bytes.get(MAGIC.len())
            && version != FORMAT_VERSION
        {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(EnvelopeError::TooShort { len: bytes.len() });
        };
        let envelope = Envelope {
            create: GlobalRevision(field(header, 4)),
            modified: GlobalRevision(field(header, 12)),
            version: field(header, 20),
            lease: field(header, 28),
            payload,
        };
        envelope.validate()?;
        Ok(envelope)
    }

    /// Checks the rules every stored key's metadata obeys.
    ///
    /// * `create >= 1`: revision 0 means "no key" in etcd, and revisions
    ///   start at 1.
    /// * `modified >= create`: a key is modified at or after its creation.
    /// * `version >= 1`: the creating write is version 1.
    ///
    /// The lease is not checked: any `i64` is a lease ID etcd could issue.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if self.create.0 < 1 {
            return Err(EnvelopeError::Invalid("create revision must be at least 1"));
        }
        if self.modified < self.create {
            return Err(EnvelopeError::Invalid(
                "mod revision must not be below create revision",
            ));
        }
        if self.version < 1 {
            return Err(EnvelopeError::Invalid("version must be at least 1"));
        }
        Ok(())
    }
}

/// The big-endian `i64` at `offset` in the header.
fn field(header: &[u8; HEADER_LEN], offset: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&header[offset..offset + 8]);
    i64::from_be_bytes(raw)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample(payload: &[u8]) -> Envelope<'_> {
        Envelope {
            create: GlobalRevision(5),
            modified: GlobalRevision(9),
            version: 3,
            lease: 0x0102_0304_0506_0708,
            payload,
        }
    }

    #[test]
    fn layout_is_pinned() {
        let bytes = sample(b"hi").encode();
        let mut want = b"STE\x01".to_vec();
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want.extend_from_slice(b"hi");
        assert_eq!(bytes, want);
        assert_eq!(bytes.len(), sample(b"hi").encoded_len());
    }

    #[test]
    fn negative_lease_is_twos_complement() {
        let env = Envelope {
            lease: -2,
            ..sample(b"")
        };
        let bytes = env.encode();
        assert_eq!(
            bytes[28..36],
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]
        );
        assert_eq!(Envelope::decode(&bytes), Ok(env));
    }

    #[test]
    fn empty_payload_is_exactly_the_header() {
        let bytes = sample(b"").encode();
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(Envelope::decode(&bytes).map(|e| e.payload), Ok(&b""[..]));
    }

    #[test]
    fn decode_borrows_the_payload() {
        let bytes = sample(b"payload").encode();
        let env = Envelope::decode(&bytes).expect("valid");
        assert!(std::ptr::eq(
            env.payload.as_ptr(),
            bytes[HEADER_LEN..].as_ptr()
        ));
    }

    #[test]
    fn encode_into_appends() {
        let mut buf = b"prefix".to_vec();
        sample(b"x").encode_into(&mut buf);
        assert_eq!(&buf[..6], b"prefix");
        assert_eq!(&buf[6..], &sample(b"x").encode()[..]);
    }

    #[test]
    fn foreign_values_are_bad_magic_even_when_short() {
        for bytes in [&b"x"[..], b"SX", b"STX", b"{\"kind\":\"Pod\"}", b"ste\x01"] {
            assert_eq!(
                Envelope::decode(bytes),
                Err(EnvelopeError::BadMagic),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn truncated_envelopes_are_too_short() {
        let full = sample(b"").encode();
        for len in 0..HEADER_LEN {
            assert_eq!(
                Envelope::decode(&full[..len]),
                Err(EnvelopeError::TooShort { len }),
                "len {len}"
            );
        }
    }

    #[test]
    fn unknown_version_byte_is_refused() {
        let mut bytes = sample(b"v").encode();
        bytes[3] = 2;
        assert_eq!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::UnsupportedVersion(2))
        );
        assert_eq!(
            Envelope::decode(b"STE\x00"),
            Err(EnvelopeError::UnsupportedVersion(0))
        );
    }

    #[test]
    fn field_rules_are_enforced_on_decode() {
        let cases = [
            (0, 0, 1),  // create 0
            (-4, 1, 1), // create negative
            (5, 4, 1),  // modified below create
            (5, 5, 0),  // version 0
            (5, 6, -1), // version negative
        ];
        for (create, modified, version) in cases {
            let env = Envelope {
                create: GlobalRevision(create),
                modified: GlobalRevision(modified),
                version,
                ..sample(b"")
            };
            assert!(matches!(env.validate(), Err(EnvelopeError::Invalid(_))));
            assert_eq!(
                Envelope::decode(&env.encode()),
                Err(env.validate().unwrap_err())
            );
        }
    }

    #[test]
    fn boundary_values_are_valid() {
        let env = Envelope {
            create: GlobalRevision(1),
            modified: GlobalRevision(1),
            version: 1,
            lease: 0,
            payload: b"",
        };
        assert_eq!(env.validate(), Ok(()));
        let max = Envelope {
            create: GlobalRevision(i64::MAX),
            modified: GlobalRevision(i64::MAX),
            version: i64::MAX,
            lease: i64::MIN,
            payload: b"\xff",
        };
        assert_eq!(Envelope::decode(&max.encode()), Ok(max));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn round_trip(
            create in 1..=i64::MAX,
            delta in 0..=i64::MAX,
            version in 1..=i64::MAX,
            lease in any::<i64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let env = Envelope {
                create: GlobalRevision(create),
                modified: GlobalRevision(create.saturating_add(delta)),
                version,
                lease,
                payload: &payload,
            };
            let bytes = env.encode();
            prop_assert_eq!(bytes.len(), HEADER_LEN + payload.len());
            prop_assert_eq!(Envelope::decode(&bytes), Ok(env));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Envelope::decode(&bytes);
            let mut enveloped = b"STE\x01".to_vec();
            enveloped.extend_from_slice(&bytes);
            let _ = Envelope::decode(&enveloped);
        }
    }
}
