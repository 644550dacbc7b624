//! `config_parse`: the `KubeProxyConfiguration` decoder and its write-back.

use kproxy_core::{Error, KubeProxyConfiguration};

/// Decodes `data` as a config. Whatever decodes must survive the life of a config:
/// - lenient decoding accepts it too, drops nothing and gives the same config;
/// - [`to_yaml`](KubeProxyConfiguration::to_yaml) of it, and of it with defaults, parses
///   back equal;
/// - [`with_defaults`](KubeProxyConfiguration::with_defaults) is idempotent;
/// - [`validate`](KubeProxyConfiguration::validate) gives the same verdict on the
///   written-back config, and every failure names a field.
///
/// Anything that does not decode must fail with a config error.
pub fn config_parse(data: &[u8]) {
    let text = crate::text(data);
    let cfg = match KubeProxyConfiguration::parse(&text) {
        Ok(cfg) => cfg,
        Err(Error::ConfigSyntax { reason }) => {
            assert!(!reason.is_empty(), "a syntax error says what is wrong");
            return;
        }
        Err(e) => panic!("parse failed with a non-syntax error: {e:?}"),
    };

    let (lenient, ignored) = KubeProxyConfiguration::parse_lenient(&text)
        .expect("lenient decoding accepts what strict decoding accepts");
    assert!(
        ignored.is_empty(),
        "strict decoding accepted unknown fields {ignored:?}"
    );
    assert_eq!(lenient, cfg, "lenient and strict decoding disagree");

    round_trip(&cfg, "the parsed config");
    let defaulted = cfg.with_defaults();
    round_trip(&defaulted, "the defaulted config");
    assert_eq!(
        defaulted.clone().with_defaults(),
        defaulted,
        "with_defaults is not idempotent"
    );

    let verdict = defaulted.validate().map_err(|e| e.to_string());
    let back = KubeProxyConfiguration::parse(&defaulted.to_yaml()).expect("checked above");
    assert_eq!(
        back.validate().map_err(|e| e.to_string()),
        verdict,
        "validation changed after a write-back"
    );
    match defaulted.validate() {
        Ok(()) => {}
        Err(Error::InvalidConfig { errors }) => {
            assert!(!errors.0.is_empty(), "an invalid config has a failed rule");
            for e in &errors.0 {
                assert!(
                    !e.field.is_empty() && !e.reason.is_empty(),
                    "a failed rule names its field and reason: {e:?}"
                );
            }
        }
        Err(e) => panic!("validate failed with a non-validation error: {e:?}"),
    }
}

/// `to_yaml` output parses back to an equal config.
fn round_trip(cfg: &KubeProxyConfiguration, what: &str) {
    let yaml = cfg.to_yaml();
    match KubeProxyConfiguration::parse(&yaml) {
        Ok(back) => assert_eq!(
            &back, cfg,
            "{what} changed in a to_yaml round trip:\n{yaml}"
        ),
        Err(e) => panic!("to_yaml of {what} does not parse back ({e}):\n{yaml}"),
    }
}
