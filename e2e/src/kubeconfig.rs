//! Kubeconfig files for each identity of the local cluster.

use std::path::{Path, PathBuf};

use crate::certs::{ClientIdentity, Pki};

/// Writes a kubeconfig that reaches `server` as `id`, referring to the PKI files
/// by path so they stay in one place.
pub fn write(
    path: &Path,
    cluster_name: &str,
    server: &str,
    pki: &Pki,
    id: &ClientIdentity,
) -> std::io::Result<PathBuf> {
    write_for(
        path,
        cluster_name,
        server,
        &pki.ca_cert(),
        id.file_stem,
        (&pki.client_cert(id), &pki.client_key(id)),
    )
}

/// A kubeconfig for any client certificate (a real node's, say).
pub fn write_for(
    path: &Path,
    cluster_name: &str,
    server: &str,
    ca: &Path,
    user: &str,
    (cert, key): (&Path, &Path),
) -> std::io::Result<PathBuf> {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": cluster_name,
            "cluster": {
                "server": server,
                "certificate-authority": ca,
            },
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate": cert,
                "client-key": key,
            },
        }],
        "contexts": [{
            "name": cluster_name,
            "context": {"cluster": cluster_name, "user": user},
        }],
        "current-context": cluster_name,
        "preferences": {},
    });
    let yaml = serde_yaml::to_string(&doc).map_err(std::io::Error::other)?;
    std::fs::write(path, yaml)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::ADMIN;

    #[tokio::test]
    async fn kube_reads_what_we_write() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(
            &dir.path().join("pki"),
            std::net::Ipv4Addr::new(10, 96, 0, 1),
            &[ADMIN],
            &[],
        )
        .unwrap();
        let path = write(
            &dir.path().join("kubeconfig"),
            "lab",
            "https://127.0.0.1:6443",
            &pki,
            &ADMIN,
        )
        .unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
    }
}
