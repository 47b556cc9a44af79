//! Upstream fields we do not implement.
//!
//! A kubeadm- or kube-proxy-written file spells out every field, most at their
//! zero value, so refusing a field merely for being present would refuse the
//! files users already have. A field is refused, by name, only when it asks for
//! something: any value other than null, false, 0, "", "0", "0s", an empty list
//! or a map of such values.

use serde_yaml::Value;

/// Why each upstream field we do not implement is refused; the field path is as
/// the user wrote it.
pub const UNSUPPORTED_FIELDS: &[(&str, &str)] = &[
    ("featureGates", "understudy-proxy has no feature gates"),
    (
        "logging",
        "logging is set by flags (--log-format, --log-level, --v)",
    ),
    (
        "clientConnection.acceptContentTypes",
        "understudy-proxy always speaks JSON to the apiserver",
    ),
    (
        "clientConnection.contentType",
        "understudy-proxy always speaks JSON to the apiserver",
    ),
    (
        "bindAddressHardFail",
        "the metrics and health server always fails hard on a bind error",
    ),
    (
        "enableProfiling",
        "understudy-proxy serves no profiling handlers",
    ),
    (
        "showHiddenMetricsForVersion",
        "understudy-proxy has no hidden metrics",
    ),
    (
        "iptables.snatNodeInternalIP",
        "SNAT to the node's InternalIP is not implemented",
    ),
    ("winkernel", "Windows (kernelspace) is not supported"),
    (
        "oomScoreAdj",
        "understudy-proxy does not set its OOM score; set it in the pod spec",
    ),
    (
        "configSyncPeriod",
        "informers do not resync; watches are the only source",
    ),
    (
        "portRange",
        "the userspace proxy it configured no longer exists upstream either",
    ),
    ("windowsRunAsService", "Windows is not supported"),
];

/// The refusal reason for `field`, if `value` asks for something.
pub fn refusal(field: &str, value: &Value) -> Option<&'static str> {
    if is_zero(value) {
        return None;
    }
    UNSUPPORTED_FIELDS
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, reason)| *reason)
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => matches!(s.as_str(), "" | "0" | "0s"),
        Value::Sequence(items) => items.is_empty(),
        Value::Mapping(map) => map.values().all(is_zero),
        Value::Tagged(tagged) => is_zero(&tagged.value),
    }
}

/// Shows a refused value compactly in an error message.
pub fn describe(value: &Value) -> String {
    serde_yaml::to_string(value)
        .map(|text| text.trim().replace('\n', " "))
        .unwrap_or_else(|_| "?".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_pass_and_others_are_refused() {
        let kubeadm_logging: Value = serde_yaml::from_str(
            "flushFrequency: 0\noptions:\n  json:\n    infoBufferSize: \"0\"\nverbosity: 0\n",
        )
        .unwrap();
        assert_eq!(refusal("logging", &kubeadm_logging), None);
        assert_eq!(refusal("oomScoreAdj", &Value::Null), None);
        assert_eq!(
            refusal("configSyncPeriod", &Value::String("0s".into())),
            None
        );
        assert!(refusal("oomScoreAdj", &Value::Number((-999).into())).is_some());
        assert!(refusal("configSyncPeriod", &Value::String("15m0s".into())).is_some());
    }
}
