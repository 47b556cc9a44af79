//! The apiserver's audit log of what the chart's ServiceAccounts did, and the
//! check of the chart's RBAC against it: a request refused (403) means a rule
//! is missing; a granted verb nobody used means a rule grants too much.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

/// Namespace whose ServiceAccounts are audited: the chart's release namespace.
pub const AUDITED_NAMESPACE: &str = crate::chart::NAMESPACE;

/// Group of the client certificates the chaos run gives each replica of an
/// understudy, so the audit log tells the replicas' writes apart.
pub const CHAOS_GROUP: &str = "understudy:chaos";

/// Audit policy: metadata of every request of the audited ServiceAccounts
/// and of every write of the chaos run's replicas, nothing else (the control
/// plane's own traffic would swamp the log).
pub fn policy_yaml() -> String {
    format!(
        "apiVersion: audit.k8s.io/v1\n\
         kind: Policy\n\
         omitStages: [\"RequestReceived\"]\n\
         rules:\n\
         - level: Metadata\n  userGroups: [\"system:serviceaccounts:{AUDITED_NAMESPACE}\"]\n\
         - level: Metadata\n  userGroups: [\"{CHAOS_GROUP}\"]\n  verbs: [\"create\", \"update\", \"patch\", \"delete\", \"deletecollection\"]\n\
         - level: None\n"
    )
}

/// Audit annotation holding the authorizer's decision (`allow` or `forbid`).
const DECISION: &str = "authorization.k8s.io/decision";

/// One API permission: what an RBAC rule grants and a request needs.
/// `resource` includes the subresource (`replicasets/status`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    pub group: String,
    pub resource: String,
    pub verb: String,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    stage: String,
    verb: String,
    user: User,
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct User {
    username: String,
    /// A bound ServiceAccount token's claims, among them the pod it was
    /// issued to (`authentication.kubernetes.io/pod-name`).
    #[serde(default)]
    extra: BTreeMap<String, Vec<String>>,
}

/// The user-info extra naming the pod a ServiceAccount token was bound to.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    resource: Option<String>,
    subresource: Option<String>,
    api_group: Option<String>,
}

/// What one ServiceAccount was allowed and refused, from the audit log.
#[derive(Debug, Default)]
pub struct Usage {
    pub used: BTreeSet<Permission>,
    pub refused: BTreeSet<Permission>,
}

/// Reads a JSON-lines audit log into each user's usage (a request the
/// authorizer allowed counts as used, whatever admission made of it; a watch
/// counts once started). Non-resource
/// requests (`/healthz`, discovery) carry no object and are left out.
pub fn read_log(path: &Path) -> std::io::Result<BTreeMap<String, Usage>> {
    let text = std::fs::read_to_string(path)?;
    Ok(parse_log(&text))
}

pub fn parse_log(text: &str) -> BTreeMap<String, Usage> {
    let mut by_user: BTreeMap<String, Usage> = BTreeMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Event>(line) else {
            continue;
        };
        // A watch is logged at ResponseStarted and completes only when it
        // ends, which a component's informers never do while it runs.
        if event.stage != "ResponseComplete" && event.stage != "ResponseStarted" {
            continue;
        }
        let Some(object) = event.object_ref else {
            continue;
        };
        let Some(resource) = object.resource else {
            continue;
        };
        let resource = match object.subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        let permission = Permission {
            group: object.api_group.unwrap_or_default(),
            resource,
            verb: event.verb,
        };
        let usage = by_user.entry(event.user.username).or_default();
        // Only the authorizer's refusals: admission also answers 403 (a
        // create in a namespace being deleted), which no rule can fix.
        match event.annotations.get(DECISION).map(String::as_str) {
            Some("forbid") => usage.refused.insert(permission),
            _ => usage.used.insert(permission),
        };
    }
    by_user
}

/// One completed write, from the audit log: who, what, and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub user: String,
    pub verb: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: String,
    pub name: String,
    /// The HTTP status answered.
    pub code: u16,
    /// When the apiserver received the request.
    pub at: k8s_openapi::jiff::Timestamp,
    /// The pod whose ServiceAccount token made the request: what tells
    /// apart two replicas sharing one ServiceAccount.
    pub pod: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WriteEvent {
    stage: String,
    verb: String,
    user: User,
    object_ref: Option<WriteRef>,
    response_status: Option<ResponseStatus>,
    request_received_timestamp: String,
}

#[derive(Deserialize)]
struct WriteRef {
    resource: Option<String>,
    subresource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct ResponseStatus {
    code: Option<u16>,
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// The completed writes of a JSON-lines audit log, in the log's order.
pub fn writes(text: &str) -> Vec<Write> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<WriteEvent>(line).ok())
        .filter(|e| e.stage == "ResponseComplete" && WRITE_VERBS.contains(&e.verb.as_str()))
        .filter_map(|e| {
            let object = e.object_ref?;
            let pod = e
                .user
                .extra
                .get(POD_NAME_EXTRA)
                .and_then(|p| p.first().cloned());
            Some(Write {
                user: e.user.username,
                pod,
                verb: e.verb,
                resource: object.resource?,
                subresource: object.subresource,
                namespace: object.namespace.unwrap_or_default(),
                name: object.name.unwrap_or_default(),
                code: e.response_status.and_then(|s| s.code).unwrap_or(0),
                at: e.request_received_timestamp.parse().ok()?,
            })
        })
        .collect()
}

/// The permissions a ClusterRole's or Role's `rules` grant, expanded to one
/// per group, resource and verb. `*` stays as it is (and is never "used").
pub fn granted(rules: &serde_json::Value) -> BTreeSet<Permission> {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    let mut out = BTreeSet::new();
    for rule in rules.as_array().into_iter().flatten() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert(Permission {
                        group: group.clone(),
                        resource: resource.clone(),
                        verb,
                    });
                }
            }
        }
    }
    out
}

/// Whether a granted permission covers a request: the same resource and
/// verb, in the same group. (Legacy `extensions` grants are judged on their
/// own: nothing calls that group any more.)
pub fn covers(grant: &Permission, request: &Permission) -> bool {
    grant.group == request.group
        && (grant.resource == request.resource || grant.resource == "*")
        && (grant.verb == request.verb || grant.verb == "*")
}

/// A permission a rule grants without anyone needing it: granted, and not
/// covering any request that was made, nor `exempt` (permissions the apiserver
/// checks internally, which no request ever shows).
pub fn unused(
    granted: &BTreeSet<Permission>,
    used: &BTreeSet<Permission>,
    exempt: &BTreeSet<Permission>,
) -> BTreeSet<Permission> {
    granted
        .iter()
        .filter(|g| !used.iter().any(|u| covers(g, u)))
        .filter(|g| !exempt.contains(*g))
        .cloned()
        .collect()
}

/// Everything `rules` of one ServiceAccount grant, read from the cluster:
/// the rules of every ClusterRole and Role bound to it by name.
pub async fn rules_of(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
) -> Result<BTreeSet<Permission>, String> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use kube::api::{Api, ListParams};
    let binds = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == service_account
                && s.namespace.as_deref() == Some(namespace)
        })
    };
    let api_err = |e: kube::Error| format!("reading RBAC of {namespace}/{service_account}: {e}");
    let rules_of = |rules: Option<Vec<k8s_openapi::api::rbac::v1::PolicyRule>>| {
        serde_json::to_value(rules)
            .map(|v| granted(&v))
            .map_err(|e| e.to_string())
    };
    let mut out = BTreeSet::new();
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    for binding in cluster_bindings
        .list(&ListParams::default())
        .await
        .map_err(api_err)?
    {
        if binds(&binding.subjects) {
            let role = cluster_roles
                .get(&binding.role_ref.name)
                .await
                .map_err(api_err)?;
            out.extend(rules_of(role.rules)?);
        }
    }
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    for binding in bindings
        .list(&ListParams::default())
        .await
        .map_err(api_err)?
    {
        if !binds(&binding.subjects) {
            continue;
        }
        let rules = if binding.role_ref.kind == "ClusterRole" {
            cluster_roles
                .get(&binding.role_ref.name)
                .await
                .map(|r| r.rules)
        } else {
            roles.get(&binding.role_ref.name).await.map(|r| r.rules)
        };
        out.extend(rules_of(rules.map_err(api_err)?)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(group: &str, resource: &str, verb: &str) -> Permission {
        Permission {
            group: group.into(),
            resource: resource.into(),
            verb: verb.into(),
        }
    }

    #[test]
    fn log_lines_become_used_and_refused_permissions() {
        let log = [
            json!({"stage": "ResponseComplete", "verb": "patch", "user": {"username": "sa"},
                   "objectRef": {"resource": "replicasets", "subresource": "status", "apiGroup": "apps"},
                   "annotations": {DECISION: "forbid"}}),
            json!({"stage": "ResponseComplete", "verb": "create", "user": {"username": "sa"},
                   "objectRef": {"resource": "pods"}, "annotations": {DECISION: "allow"}}),
            json!({"stage": "ResponseStarted", "verb": "watch", "user": {"username": "sa"},
                   "objectRef": {"resource": "pods"}, "responseStatus": {"code": 200}}),
            json!({"stage": "ResponseComplete", "verb": "get", "user": {"username": "sa"},
                   "responseStatus": {"code": 200}}),
        ]
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n");
        let usage = &parse_log(&format!("{log}\nnot json"))["sa"];
        assert_eq!(
            usage.refused,
            [p("apps", "replicasets/status", "patch")].into()
        );
        assert_eq!(
            usage.used,
            [p("", "pods", "create"), p("", "pods", "watch")].into()
        );
    }

    #[test]
    fn rules_expand_to_single_permissions() {
        let rules =
            json!([{"apiGroups": ["", "apps"], "resources": ["pods"], "verbs": ["get", "list"]}]);
        assert_eq!(granted(&rules).len(), 4);
        assert!(covers(&p("", "pods", "*"), &p("", "pods", "delete")));
        assert!(!covers(&p("apps", "pods", "get"), &p("", "pods", "get")));
    }

    #[test]
    fn unused_grants_are_those_no_request_needed_and_not_exempt() {
        let granted = [
            p("", "pods", "get"),
            p("", "pods", "list"),
            p("", "endpoints/restricted", "create"),
            p("apps", "*", "watch"),
        ]
        .into();
        let used = [p("", "pods", "list"), p("apps", "replicasets", "watch")].into();
        let exempt = [p("", "endpoints/restricted", "create")].into();
        assert_eq!(
            unused(&granted, &used, &exempt),
            [p("", "pods", "get")].into()
        );
    }

    #[test]
    fn the_policy_audits_only_the_release_namespace() {
        let policy: serde_json::Value = serde_yaml::from_str(&policy_yaml()).unwrap();
        assert_eq!(
            policy["rules"][0]["userGroups"][0],
            format!("system:serviceaccounts:{AUDITED_NAMESPACE}")
        );
        assert_eq!(policy["rules"][1]["userGroups"][0], CHAOS_GROUP);
        assert_eq!(policy["rules"][2]["level"], "None");
    }

    #[test]
    fn reads_completed_writes_with_their_answer_and_time() {
        let log = r#"{"stage":"ResponseStarted","verb":"create","user":{"username":"a"},"objectRef":{"resource":"pods","namespace":"ns","name":"p","subresource":"binding"},"requestReceivedTimestamp":"2026-12-06T10:00:00.000000Z"}
{"stage":"ResponseComplete","verb":"create","user":{"username":"a"},"objectRef":{"resource":"pods","namespace":"ns","name":"p","subresource":"binding"},"responseStatus":{"code":201},"requestReceivedTimestamp":"2026-12-06T10:00:00.500000Z"}
{"stage":"ResponseComplete","verb":"get","user":{"username":"a"},"objectRef":{"resource":"pods","namespace":"ns","name":"p"},"responseStatus":{"code":200},"requestReceivedTimestamp":"2026-12-06T10:00:01Z"}
not json"#;
        let found = writes(log);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].user, "a");
        assert_eq!(found[0].subresource.as_deref(), Some("binding"));
        assert_eq!(found[0].code, 201);
        assert_eq!(found[0].at.to_string(), "2026-12-06T10:00:00.5Z");
        assert_eq!(found[0].pod, None, "a certificate names no pod");
    }

    #[test]
    fn a_bound_token_names_the_pod_that_wrote() {
        let log = r#"{"stage":"ResponseComplete","verb":"update","user":{"username":"system:serviceaccount:understudy-system:understudy-scheduler","extra":{"authentication.kubernetes.io/pod-name":["understudy-scheduler-7d9-abcde"],"authentication.kubernetes.io/pod-uid":["u1"]}},"objectRef":{"resource":"leases","namespace":"understudy-system","name":"understudy-scheduler"},"responseStatus":{"code":200},"requestReceivedTimestamp":"2026-12-06T10:00:00Z"}"#;
        let found = writes(log);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].pod.as_deref(),
            Some("understudy-scheduler-7d9-abcde")
        );
    }
}
