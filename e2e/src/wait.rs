//! Waits on cluster state with deadlines, for the lab and the e2e tests alike.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{Api, ListParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use understudy_component_base::client::{ClientError, ClientOptions};

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("timed out after {timeout:?} waiting for {what}{last}")]
    Timeout {
        what: String,
        timeout: Duration,
        last: String,
    },
    #[error("watching {what}: {source}")]
    Watch {
        what: String,
        source: kube::runtime::wait::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// An unthrottled admin client for the lab's own kubeconfig.
pub async fn client_for(kubeconfig: &Path) -> Result<Client, WaitError> {
    let opts = ClientOptions {
        kubeconfig: Some(kubeconfig.into()),
        qps: 0.0,
        burst: 0,
        user_agent: "understudy-lab".into(),
    };
    Ok(opts.connected_client(Duration::from_secs(30)).await?)
}

/// Waits (on a watch, not by polling) until the named object satisfies `cond`.
pub async fn object<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    cond: impl Condition<K>,
) -> Result<K, WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let what = format!("{} {name}", K::kind(&Default::default()));
    let what_for_err = what.clone();
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => Err(WaitError::Timeout {
            what,
            timeout,
            last: " (object was deleted)".into(),
        }),
        Ok(Err(source)) => Err(WaitError::Watch {
            what: what_for_err,
            source,
        }),
        Err(_) => {
            let last = match api.get_opt(name).await {
                Ok(Some(obj)) => format!("; last seen: {obj:?}"),
                Ok(None) => "; the object does not exist".into(),
                Err(e) => format!("; reading it failed: {e}"),
            };
            Err(WaitError::Timeout {
                what,
                timeout,
                last,
            })
        }
    }
}

/// Polls `check` (re-listing on each round) until it returns `Some`, for
/// conditions over many objects that one watch cannot express.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, WaitError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = format!(" (last: {e})"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(WaitError::Timeout {
                what: what.into(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ready, and no longer carrying the not-ready/unreachable taints the node
/// lifecycle controller puts on new nodes: until those go, no pod fits there.
pub fn node_is_ready(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conds| {
            conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|taints| {
            taints.iter().any(|t| {
                t.key == "node.kubernetes.io/not-ready" || t.key == "node.kubernetes.io/unreachable"
            })
        });
    ready && !tainted
}

/// Until at least `count` nodes are Ready.
pub async fn nodes_ready(
    client: &Client,
    count: usize,
    timeout: Duration,
) -> Result<usize, WaitError> {
    let nodes: Api<Node> = Api::all(client.clone());
    until(&format!("{count} Ready nodes"), timeout, || {
        let nodes = nodes.clone();
        async move {
            let list = nodes
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let ready = list.items.iter().filter(|n| node_is_ready(n)).count();
            Ok((ready >= count).then_some(ready))
        }
    })
    .await
}

/// Until `namespace`'s default ServiceAccount exists: before it, the
/// ServiceAccount admission plugin rejects pods there.
pub async fn accepts_pods(
    client: &Client,
    namespace: &str,
    timeout: Duration,
) -> Result<(), WaitError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    object(
        &accounts,
        "default",
        timeout,
        |sa: Option<&ServiceAccount>| sa.is_some(),
    )
    .await
    .map(|_| ())
}
