//! Writes whose answer the controllers do not need in full. kube's `Api`
//! decodes every answer into the whole object — managedFields included — and
//! for the busiest writes (pod creates and deletes, ReplicaSet status
//! patches) that decoding was a measurable share of our CPU. These requests
//! are built by kube (`kube::core::Request`) and sent through the same
//! `Client` (auth, QPS, errors as `kube::Error::Api`); only the answer is
//! parsed past, keeping at most the name.

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::Request;
use kube::{Client, Resource};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    metadata: NamedMeta,
}

#[derive(Default, Deserialize)]
struct NamedMeta {
    #[serde(default)]
    name: Option<String>,
}

fn path<K: Resource<DynamicType = ()>>(namespace: &str) -> String {
    K::url_path(&(), Some(namespace))
}

/// Creates `obj` in `namespace`; returns the name it got (generateName).
pub async fn create<K>(client: &Client, namespace: &str, obj: &K) -> kube::Result<String>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let body = serde_json::to_vec(obj).map_err(kube::Error::SerdeError)?;
    let request = Request::new(path::<K>(namespace))
        .create(&PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
    let named: Named = client.request(request).await?;
    Ok(named.metadata.name.unwrap_or_default())
}

/// Deletes `name` in `namespace`.
pub async fn delete<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    params: &DeleteParams,
) -> kube::Result<()>
where
    K: Resource<DynamicType = ()>,
{
    let request = Request::new(path::<K>(namespace))
        .delete(name, params)
        .map_err(kube::Error::BuildRequest)?;
    client.request::<IgnoredAny>(request).await?;
    Ok(())
}

/// Patches the status subresource of `name` in `namespace`.
pub async fn patch_status<K, P>(
    client: &Client,
    namespace: &str,
    name: &str,
    patch: &Patch<P>,
) -> kube::Result<()>
where
    K: Resource<DynamicType = ()>,
    P: Serialize + std::fmt::Debug,
{
    let request = Request::new(path::<K>(namespace))
        .patch_subresource("status", name, &PatchParams::default(), patch)
        .map_err(kube::Error::BuildRequest)?;
    client.request::<IgnoredAny>(request).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_name_of_an_answer_is_kept() {
        let answer = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web-x7k2p",
            "managedFields":[{"manager":"m","fieldsV1":{"f:spec":{}}}]},"spec":{"containers":[]}}"#;
        let named: Named = serde_json::from_str(answer).unwrap();
        assert_eq!(named.metadata.name.as_deref(), Some("web-x7k2p"));
        let status = r#"{"kind":"Status","apiVersion":"v1","status":"Success"}"#;
        let named: Named = serde_json::from_str(status).unwrap();
        assert_eq!(named.metadata.name, None);
    }
}
