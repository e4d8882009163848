//! Key layout and Kubernetes name validation.

use ste_core::keys::{DEFAULT_PREFIX, KeyError, KeyLayout, validate_namespace, validate_pod_name};

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
(e.g. 'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

#[test]
fn default_layout() {
    let layout = KeyLayout::default();
    assert_eq!(layout.prefix(), DEFAULT_PREFIX);
    assert_eq!(layout.pods_prefix(), "/registry/pods/");
    assert_eq!(
        layout.pod_key("default", "web-0").as_deref(),
        Ok("/registry/pods/default/web-0")
    );
}

#[test]
fn fork_layout() {
    let layout = KeyLayout::fork();
    assert_eq!(layout.prefix(), "");
    assert_eq!(layout.pods_prefix(), "/pods/");
    assert_eq!(
        layout.pod_key("default", "nginx").as_deref(),
        Ok("/pods/default/nginx")
    );
    assert_eq!(
        layout.parse_pod_key(b"/pods/default/nginx"),
        Some(("default", "nginx"))
    );
    assert_eq!(layout.parse_pod_key(b"/registry/pods/default/nginx"), None);
}

#[test]
fn custom_prefix() {
    let layout = KeyLayout::new("/ste/registry").expect("valid");
    assert_eq!(
        layout.pod_key("a", "b").as_deref(),
        Ok("/ste/registry/pods/a/b")
    );
    for (bad, reason) in [
        ("", "must start with '/'"),
        ("registry", "must start with '/'"),
        ("/", "must not end with '/'"),
        ("/registry/", "must not end with '/'"),
    ] {
        assert_eq!(
            KeyLayout::new(bad),
            Err(KeyError::InvalidPrefix {
                prefix: bad.into(),
                reason
            }),
            "{bad:?}"
        );
    }
}

#[test]
fn parse_is_inverse_of_build() {
    let layout = KeyLayout::default();
    for (ns, name) in [
        ("default", "web-0"),
        ("kube-system", "coredns.abc-1"),
        ("a", "0"),
    ] {
        let key = layout.pod_key(ns, name).expect("valid");
        assert_eq!(layout.parse_pod_key(key.as_bytes()), Some((ns, name)));
    }
}

#[test]
fn parse_rejects_non_pod_keys() {
    let layout = KeyLayout::default();
    for key in [
        &b"/registry/pods/default"[..],
        b"/registry/pods/default/",
        b"/registry/pods//web-0",
        b"/registry/pods/default/web-0/extra",
        b"/registry/services/default/web-0",
        b"/registry/podsx/default/web-0",
        b"/registrypods/default/web-0",
        b"/other/pods/default/web-0",
        b"/registry/pods/Default/web-0",
        b"/registry/pods/default/Web-0",
        b"/registry/pods/default/web\xff",
        b"",
    ] {
        assert_eq!(
            layout.parse_pod_key(key),
            None,
            "{}",
            String::from_utf8_lossy(key)
        );
    }
}

#[test]
fn pod_names_are_dns1123_subdomains() {
    let max = "a".repeat(253);
    for ok in ["a", "0", "web-0", "a.b", "a-b.c-d", "1.2.3", max.as_str()] {
        assert_eq!(validate_pod_name(ok), Ok(()), "{ok}");
    }
    for bad in [
        "A", "-a", "a-", ".a", "a.", "a..b", "a.-b", "a_b", "a b", "a/b", "é",
    ] {
        assert_eq!(
            validate_pod_name(bad),
            Err(KeyError::NotDns1123Subdomain {
                field: "metadata.name",
                value: bad.into()
            }),
            "{bad}"
        );
    }
    let long = "a".repeat(254);
    assert!(matches!(
        validate_pod_name(&long),
        Err(KeyError::TooLong { max: 253, .. })
    ));
}

#[test]
fn namespaces_are_dns1123_labels() {
    let max = "a".repeat(63);
    for ok in ["a", "0", "kube-system", "123-abc", max.as_str()] {
        assert_eq!(validate_namespace(ok), Ok(()), "{ok}");
    }
    for bad in ["A", "-a", "a-", "a.b", "a_b", "a/b"] {
        assert_eq!(
            validate_namespace(bad),
            Err(KeyError::NotDns1123Label {
                field: "metadata.namespace",
                value: bad.into()
            }),
            "{bad}"
        );
    }
    let long = "a".repeat(64);
    assert!(matches!(
        validate_namespace(&long),
        Err(KeyError::TooLong { max: 63, .. })
    ));
}

#[test]
fn messages_read_like_kubectl() {
    let layout = KeyLayout::default();
    let err = |ns: &str, name: &str| layout.pod_key(ns, name).map_err(|e| e.to_string());
    assert_eq!(
        err("default", "Web_0"),
        Err(format!(
            "metadata.name: Invalid value: \"Web_0\": {SUBDOMAIN_MSG}"
        ))
    );
    assert_eq!(
        err("Default", "web-0"),
        Err(
            "metadata.namespace: Invalid value: \"Default\": a lowercase RFC 1123 label must \
consist of lower case alphanumeric characters or '-', and must start and end with an \
alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_owned()
        )
    );
    assert_eq!(
        err("default", ""),
        Err("metadata.name: Required value: name or generateName is required".to_owned())
    );
    assert_eq!(
        err("", "web-0"),
        Err("metadata.namespace: Required value".to_owned())
    );
    let long = "a".repeat(64);
    assert_eq!(
        err(&long, "web-0"),
        Err(format!(
            "metadata.namespace: Invalid value: \"{long}\": must be no more than 63 characters"
        ))
    );
}
