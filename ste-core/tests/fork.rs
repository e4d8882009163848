//! Golden vectors for the original prototype's placement schemes. These are
//! the fork's own outputs: never change an expected value to make a test pass.

use ste_core::fork::{
    ForkError, ForkRing, ForkSuffix, fork_point, fork_shard_url, fork_suffix_code,
};

const SHARDS: [&str; 3] = [
    "https://10.0.0.1:2279",
    "https://10.0.0.2:2279",
    "https://10.0.0.3:2279",
];

#[test]
fn suffix_codes() {
    assert_eq!(fork_suffix_code("https://127.0.0.1:2379"), "dldnhb0");
    assert_eq!(fork_suffix_code("https://10.0.0.1:2279"), "1b2wj30");
    assert_eq!(fork_suffix_code("https://10.0.0.2:2279"), "024k8tr");
}

#[test]
fn md5_ring_owners() {
    let ring = ForkRing::new(SHARDS);
    assert_eq!(
        ring.locate(b"/pods/default/nginx"),
        Some("https://10.0.0.2:2279")
    );
    assert_eq!(
        ring.locate(b"/pods/default/web-7d4b9c6f5-abcde"),
        Some("https://10.0.0.1:2279")
    );
    assert_eq!(
        ring.locate_pod("default", "nginx"),
        Ok("https://10.0.0.2:2279")
    );
}

#[test]
fn md5_ring_from_node_ips_and_duplicates() {
    let from_ips = ForkRing::from_node_ips(["10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.1"]);
    assert_eq!(from_ips, ForkRing::new(SHARDS));
    assert_eq!(from_ips.len(), 3);
    let mut shards: Vec<&str> = from_ips.shards().collect();
    shards.sort_unstable();
    assert_eq!(shards, SHARDS);
    assert_eq!(fork_shard_url("10.0.0.9"), "https://10.0.0.9:2279");
}

#[test]
fn md5_point_is_signed_little_endian() {
    // md5("") = d41d8cd98f00b204 e9800998ecf8427e
    let p = fork_point(b"");
    assert_eq!(
        p.high,
        i64::from_le_bytes([0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04])
    );
    assert_eq!(
        p.low,
        i64::from_le_bytes([0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e])
    );
    assert!(p.high > 0 && p.low > 0);
    // md5("a") = 0cc175b9c0f1b6a8 31c399e269772661: high is negative.
    assert!(fork_point(b"a").high < 0);
}

#[test]
fn md5_ring_empty_and_single() {
    let empty = ForkRing::new(Vec::<String>::new());
    assert!(empty.is_empty());
    assert_eq!(empty.locate(b"/pods/a/b"), None);
    assert_eq!(empty.locate_pod("a", "b"), Err(ForkError::EmptyRing));
    let one = ForkRing::new(["https://10.0.0.1:2279"]);
    assert_eq!(one.locate(b"/pods/a/b"), Some("https://10.0.0.1:2279"));
}

#[test]
fn md5_ring_validates_pod_names() {
    let ring = ForkRing::new(SHARDS);
    assert!(matches!(
        ring.locate_pod("Default", "nginx"),
        Err(ForkError::Key(_))
    ));
    assert!(matches!(
        ring.locate_pod("default", ""),
        Err(ForkError::Key(_))
    ));
}

#[test]
fn suffix_decodes_pod_names() {
    let suffix = ForkSuffix::new(SHARDS).expect("no collision");
    assert_eq!(
        suffix.shard_for_pod("web-0-1b2wj30"),
        Ok("https://10.0.0.1:2279")
    );
    assert_eq!(
        suffix.shard_for_pod("x-024k8tr"),
        Ok("https://10.0.0.2:2279")
    );
    let third = fork_suffix_code(SHARDS[2]);
    assert_eq!(
        suffix.shard_for_pod(&format!("nginx-{third}")),
        Ok(SHARDS[2])
    );
    assert_eq!(suffix.shard_for_code("1b2wj30"), Some(SHARDS[0]));
    assert_eq!(suffix.shard_for_code("zzzzzzz"), None);
}

#[test]
fn suffix_errors() {
    let suffix = ForkSuffix::new(SHARDS).expect("no collision");
    assert_eq!(
        suffix.shard_for_pod("nginx"),
        Err(ForkError::NoSuffix {
            pod: "nginx".into()
        })
    );
    for (pod, token) in [
        ("web-1b2wj3", "1b2wj3"),     // too short
        ("web-1b2wj300", "1b2wj300"), // too long
        ("web-1B2WJ30", "1B2WJ30"),   // upper case
        ("web-1b2wj3_", "1b2wj3_"),   // bad character
        ("web-", ""),                 // empty token
        ("web-1b2wj3é", "1b2wj3é"),   // 7 chars but not ASCII
    ] {
        assert_eq!(
            suffix.shard_for_pod(pod),
            Err(ForkError::BadSuffix {
                pod: pod.into(),
                suffix: token.into()
            }),
            "{pod}"
        );
    }
    assert_eq!(
        suffix.shard_for_pod("web-dldnhb0"),
        Err(ForkError::UnknownSuffix {
            pod: "web-dldnhb0".into(),
            code: "dldnhb0".into()
        })
    );
    let msg = suffix
        .shard_for_pod("web-dldnhb0")
        .map_err(|e| e.to_string());
    assert_eq!(
        msg,
        Err("pod name \"web-dldnhb0\": no shard has suffix code \"dldnhb0\"".into())
    );
}

#[test]
fn suffix_repeated_shards_are_fine() {
    let suffix = ForkSuffix::new([SHARDS[0], SHARDS[0], SHARDS[1]]).expect("same URL twice");
    assert_eq!(suffix.shard_for_pod("a-1b2wj30"), Ok(SHARDS[0]));
}

#[test]
fn suffix_codes_are_well_formed() {
    for i in 0..2000 {
        let code = fork_suffix_code(&format!("https://10.0.{}.{}:2279", i / 256, i % 256));
        assert_eq!(code.len(), 7, "{code}");
        assert!(
            code.bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
    }
}

#[test]
fn suffix_collision_is_refused() {
    // Found by brute force over 10.0.0.0/8: a real FNV-1a mod 36^7 collision.
    let (a, b) = ("https://10.8.208.194:2279", "https://10.13.113.18:2279");
    let code = fork_suffix_code(a);
    assert_eq!(code, fork_suffix_code(b));
    assert_eq!(
        ForkSuffix::new([a, b]),
        Err(ForkError::SuffixCollision {
            code,
            first: a.into(),
            second: b.into()
        })
    );
}
