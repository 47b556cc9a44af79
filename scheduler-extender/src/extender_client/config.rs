//! The `extenders:` entries of a KubeSchedulerConfiguration
//! (kubescheduler.config.k8s.io/v1 `Extender`), with upstream's field names
//! and upstream's validation (`validateExtenders`).

use std::time::Duration;

use serde::Deserialize;

/// Upstream's DefaultExtenderTimeout, used when `httpTimeout` is unset or 0.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// One extender as written in the configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtenderConfig {
    #[serde(rename = "urlPrefix")]
    pub url_prefix: String,
    #[serde(default)]
    pub filter_verb: String,
    #[serde(default)]
    pub preempt_verb: String,
    #[serde(default)]
    pub prioritize_verb: String,
    #[serde(default)]
    pub weight: i64,
    #[serde(default)]
    pub bind_verb: String,
    #[serde(default, rename = "enableHTTPS")]
    pub enable_https: bool,
    pub tls_config: Option<ExtenderTlsConfig>,
    /// A Go duration ("5s", "1m30s"); unset or zero means 5 s.
    pub http_timeout: Option<String>,
    #[serde(default)]
    pub node_cache_capable: bool,
    #[serde(default)]
    pub managed_resources: Vec<ManagedResource>,
    #[serde(default)]
    pub ignorable: bool,
}

/// `tlsConfig` of an extender: client-go's TLS settings. The `*Data` fields
/// are `[]byte` upstream, so YAML/JSON carries them base64-encoded.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtenderTlsConfig {
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub server_name: String,
    #[serde(default)]
    pub cert_file: String,
    #[serde(default)]
    pub key_file: String,
    #[serde(default)]
    pub ca_file: String,
    #[serde(default)]
    pub cert_data: String,
    #[serde(default)]
    pub key_data: String,
    #[serde(default)]
    pub ca_data: String,
}

/// An extended resource the extender manages; pods asking for none of an
/// extender's managed resources are not sent to it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedResource {
    pub name: String,
    /// The scheduler's NodeResourcesFit leaves this resource to the extender.
    #[serde(default)]
    pub ignored_by_scheduler: bool,
}

impl ExtenderConfig {
    pub fn http_timeout(&self) -> Result<Duration, String> {
        match self.http_timeout.as_deref() {
            None | Some("") => Ok(DEFAULT_HTTP_TIMEOUT),
            Some(v) => {
                let d = humantime::parse_duration(v).map_err(|e| format!("{v:?}: {e}"))?;
                Ok(if d.is_zero() { DEFAULT_HTTP_TIMEOUT } else { d })
            }
        }
    }
}

/// Upstream's validateExtenders, with its messages, plus what would only
/// fail later (an unparsable timeout or URL).
pub fn validate(extenders: &[ExtenderConfig]) -> Result<(), String> {
    let mut errors = vec![];
    let mut binders = 0;
    let mut managed = std::collections::HashSet::new();
    for (i, e) in extenders.iter().enumerate() {
        let path = format!("extenders[{i}]");
        if e.url_prefix.is_empty() {
            errors.push(format!("{path}.urlPrefix: Required value"));
        } else if let Err(err) = reqwest::Url::parse(&e.url_prefix) {
            errors.push(format!(
                "{path}.urlPrefix: Invalid value: {:?}: {err}",
                e.url_prefix
            ));
        }
        if !e.prioritize_verb.is_empty() && e.weight <= 0 {
            errors.push(format!(
                "{path}.weight: Invalid value: {}: must have a positive weight applied to it",
                e.weight
            ));
        }
        if !e.bind_verb.is_empty() {
            binders += 1;
        }
        if let Err(err) = e.http_timeout() {
            errors.push(format!("{path}.httpTimeout: Invalid value: {err}"));
        }
        for (j, r) in e.managed_resources.iter().enumerate() {
            let field = format!("{path}.managedResources[{j}].name");
            if let Err(msg) = extended_resource_name(&r.name) {
                errors.push(format!("{field}: Invalid value: {:?}: {msg}", r.name));
            }
            if !managed.insert(r.name.as_str()) {
                errors.push(format!(
                    "{field}: Invalid value: {:?}: duplicate extender managed resource name",
                    r.name
                ));
            }
        }
    }
    if binders > 1 {
        errors.push(format!(
            "extenders: Invalid value: \"found {binders} extenders implementing bind\": only one extender can implement bind"
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join(", "))
    }
}

/// Upstream's IsExtendedResourceName over a qualified name: a domain prefix
/// that is not `kubernetes.io` (nor `*.kubernetes.io`), not `requests.`-prefixed.
fn extended_resource_name(name: &str) -> Result<(), &'static str> {
    let Some((prefix, local)) = name.split_once('/') else {
        return Err("is an invalid extended resource name");
    };
    let qualified = !prefix.is_empty()
        && prefix.len() <= 253
        && prefix.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && !local.is_empty()
        && local.len() <= 63
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && local.as_bytes()[0].is_ascii_alphanumeric()
        && local.as_bytes()[local.len() - 1].is_ascii_alphanumeric();
    if !qualified {
        return Err(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/'",
        );
    }
    if prefix == "kubernetes.io"
        || prefix.ends_with(".kubernetes.io")
        || name.starts_with("requests.")
    {
        return Err("is an invalid extended resource name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<ExtenderConfig> {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn reads_every_upstream_field() {
        let e = &parse(
            r#"
- urlPrefix: https://ext.example:8443/scheduler
  filterVerb: filter
  preemptVerb: preempt
  prioritizeVerb: prioritize
  weight: 3
  bindVerb: bind
  enableHTTPS: true
  tlsConfig: {insecure: false, serverName: ext, caData: Q0E=}
  httpTimeout: 1m30s
  nodeCacheCapable: true
  managedResources: [{name: example.com/gpu, ignoredByScheduler: true}]
  ignorable: true
"#,
        )[0];
        assert_eq!(e.weight, 3);
        assert!(e.enable_https && e.node_cache_capable && e.ignorable);
        assert_eq!(e.tls_config.as_ref().unwrap().server_name, "ext");
        assert_eq!(e.http_timeout().unwrap(), Duration::from_secs(90));
        assert!(e.managed_resources[0].ignored_by_scheduler);
        validate(std::slice::from_ref(e)).unwrap();
    }

    #[test]
    fn timeout_defaults_to_five_seconds() {
        let e = &parse("[{urlPrefix: http://x, httpTimeout: 0s}]")[0];
        assert_eq!(e.http_timeout().unwrap(), DEFAULT_HTTP_TIMEOUT);
        let e = &parse("[{urlPrefix: http://x}]")[0];
        assert_eq!(e.http_timeout().unwrap(), DEFAULT_HTTP_TIMEOUT);
    }

    #[test]
    fn unknown_fields_are_named() {
        let err =
            serde_yaml::from_str::<Vec<ExtenderConfig>>("[{urlPrefix: http://x, filterverb: f}]")
                .unwrap_err()
                .to_string();
        assert!(err.contains("filterverb"), "{err}");
    }

    #[test]
    fn upstream_validation_messages() {
        for (yaml, needle) in [
            (
                "[{urlPrefix: http://x, prioritizeVerb: p}]",
                "extenders[0].weight: Invalid value: 0: must have a positive weight applied to it",
            ),
            (
                "[{urlPrefix: http://x, bindVerb: b}, {urlPrefix: http://y, bindVerb: b}]",
                "found 2 extenders implementing bind\": only one extender can implement bind",
            ),
            (
                "[{urlPrefix: http://x, managedResources: [{name: example.com/a}, {name: example.com/a}]}]",
                "duplicate extender managed resource name",
            ),
            (
                "[{urlPrefix: http://x, managedResources: [{name: kubernetes.io/gpu}]}]",
                "is an invalid extended resource name",
            ),
            (
                "[{urlPrefix: http://x, managedResources: [{name: cpu}]}]",
                "is an invalid extended resource name",
            ),
            (
                "[{urlPrefix: ''}]",
                "extenders[0].urlPrefix: Required value",
            ),
            ("[{urlPrefix: 'not a url'}]", "extenders[0].urlPrefix"),
            (
                "[{urlPrefix: http://x, httpTimeout: soon}]",
                "extenders[0].httpTimeout",
            ),
        ] {
            let err = validate(&parse(yaml)).unwrap_err();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }
}
