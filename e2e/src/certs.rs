//! The local cluster's PKI, made in-process with rcgen: one CA, the apiserver's
//! serving certificate, client certificates for each identity, and the service
//! account signing key. Mirrors what kubeadm writes to /etc/kubernetes/pki.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A client identity: the certificate's CN is the user, each O a group.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    pub file_stem: &'static str,
    pub user: &'static str,
    pub groups: &'static [&'static str],
}

/// Identities the harness writes kubeconfigs for.
pub const ADMIN: ClientIdentity = ClientIdentity {
    file_stem: "admin",
    user: "kubernetes-admin",
    groups: &["system:masters"],
};
pub const CONTROLLER_MANAGER: ClientIdentity = ClientIdentity {
    file_stem: "controller-manager",
    user: "system:kube-controller-manager",
    groups: &[],
};
pub const SCHEDULER: ClientIdentity = ClientIdentity {
    file_stem: "scheduler",
    user: "system:kube-scheduler",
    groups: &[],
};
/// The apiserver's identity towards kubelets (logs, exec, port-forward), as
/// kubeadm's `apiserver-kubelet-client`.
pub const KUBELET_CLIENT: ClientIdentity = ClientIdentity {
    file_stem: "apiserver-kubelet-client",
    user: "kube-apiserver-kubelet-client",
    groups: &["system:masters"],
};
/// kube-proxy on the real nodes: the bootstrap policy binds `system:node-proxier` to it.
pub const KUBE_PROXY: ClientIdentity = ClientIdentity {
    file_stem: "kube-proxy",
    user: "system:kube-proxy",
    groups: &[],
};

/// A real node: its kubelet's client identity (`system:node:<name>` in
/// `system:nodes`, what the Node authorizer and NodeRestriction expect) and
/// its serving certificate for the node's address.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub name: String,
    pub ip: Ipv4Addr,
}

/// Paths of everything written by [`Pki::create`].
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn apiserver_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    pub fn apiserver_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }
    pub fn client_cert(&self, id: &ClientIdentity) -> PathBuf {
        self.dir.join(format!("{}.crt", id.file_stem))
    }
    pub fn client_key(&self, id: &ClientIdentity) -> PathBuf {
        self.dir.join(format!("{}.key", id.file_stem))
    }
    pub fn node_client_cert(&self, node: &str) -> PathBuf {
        self.dir.join(format!("node-{node}.crt"))
    }
    pub fn node_client_key(&self, node: &str) -> PathBuf {
        self.dir.join(format!("node-{node}.key"))
    }
    pub fn kubelet_serving_cert(&self, node: &str) -> PathBuf {
        self.dir.join(format!("kubelet-{node}.crt"))
    }
    pub fn kubelet_serving_key(&self, node: &str) -> PathBuf {
        self.dir.join(format!("kubelet-{node}.key"))
    }

    /// Writes a fresh PKI into `dir`. The service cluster IP (first address of the
    /// service range) is a SAN so in-cluster clients can verify the apiserver.
    pub fn create(
        dir: &Path,
        service_ip: Ipv4Addr,
        clients: &[ClientIdentity],
        nodes: &[NodeIdentity],
    ) -> Result<Self, CertError> {
        std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
            path: dir.into(),
            source,
        })?;
        let pki = Self { dir: dir.into() };
        let gen_err = |what: &str| {
            let what = what.to_string();
            move |source| CertError::Generate { what, source }
        };

        let ca_key = KeyPair::generate().map_err(gen_err("CA key"))?;
        let ca_params = ca_params().map_err(gen_err("CA"))?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err("CA"))?;
        write(&pki.ca_cert(), &ca_cert.pem())?;
        write(&pki.dir.join("ca.key"), &ca_key.serialize_pem())?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(gen_err("apiserver key"))?;
        let mut server = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
        ])
        .map_err(gen_err("apiserver"))?;
        server
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        server
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(service_ip)));
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .map_err(gen_err("apiserver"))?;
        write(&pki.apiserver_cert(), &server_cert.pem())?;
        write(&pki.apiserver_key(), &server_key.serialize_pem())?;

        for id in clients {
            let (cert, key) = client_cert(&issuer, id.user, id.groups)?;
            write(&pki.client_cert(id), &cert)?;
            write(&pki.client_key(id), &key)?;
        }
        for node in nodes {
            let user = format!("system:node:{}", node.name);
            let (cert, key) = client_cert(&issuer, &user, &["system:nodes"])?;
            write(&pki.node_client_cert(&node.name), &cert)?;
            write(&pki.node_client_key(&node.name), &key)?;

            let key = KeyPair::generate().map_err(gen_err(&user))?;
            let mut params =
                CertificateParams::new(vec![node.name.clone()]).map_err(gen_err(&user))?;
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(node.ip)));
            params
                .distinguished_name
                .push(DnType::CommonName, user.as_str());
            params
                .distinguished_name
                .push(DnType::OrganizationName, "system:nodes");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let cert = params.signed_by(&key, &issuer).map_err(gen_err(&user))?;
            write(&pki.kubelet_serving_cert(&node.name), &cert.pem())?;
            write(&pki.kubelet_serving_key(&node.name), &key.serialize_pem())?;
        }

        let sa_key = KeyPair::generate().map_err(gen_err("service account key"))?;
        write(&pki.sa_key(), &sa_key.serialize_pem())?;
        write(&pki.sa_pub(), &sa_key.public_key_pem())?;
        Ok(pki)
    }
}

impl Pki {
    /// Issues one more client certificate from the PKI's CA (`<file_stem>.crt`
    /// and `.key`), for a client the lab did not foresee: the chaos run gives
    /// each replica of an understudy its own user, which the audit log names.
    pub fn issue_client(
        &self,
        file_stem: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<(PathBuf, PathBuf), CertError> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|source| CertError::Write { path, source })
        };
        let gen_err = |source| CertError::Generate {
            what: user.to_string(),
            source,
        };
        let ca_key = KeyPair::from_pem(&read(self.dir.join("ca.key"))?).map_err(gen_err)?;
        // The same subject and key as the CA certificate on disk: what a
        // certificate's issuer name and authority key identifier need.
        let issuer = Issuer::new(ca_params().map_err(gen_err)?, ca_key);
        let (cert, key) = client_cert(&issuer, user, groups)?;
        let paths = (
            self.dir.join(format!("{file_stem}.crt")),
            self.dir.join(format!("{file_stem}.key")),
        );
        write(&paths.0, &cert)?;
        write(&paths.1, &key)?;
        Ok(paths)
    }
}

/// The CA's certificate parameters (its key is separate).
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "understudy-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A client certificate: the CN is the user, each O a group.
fn client_cert(
    issuer: &Issuer<'_, KeyPair>,
    user: &str,
    groups: &[&str],
) -> Result<(String, String), CertError> {
    let gen_err = |source| CertError::Generate {
        what: user.to_string(),
        source,
    };
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name.push(DnType::CommonName, user);
    for group in groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *group);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).map_err(gen_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(path: &Path, contents: &str) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()).map(|_| f))
        .map_err(|source| CertError::Write {
            path: path.into(),
            source,
        })?;
    file.flush().map_err(|source| CertError::Write {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_as_pem() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(
            dir.path(),
            Ipv4Addr::new(10, 96, 0, 1),
            &[ADMIN, SCHEDULER],
            &[NodeIdentity {
                name: "real-0".into(),
                ip: Ipv4Addr::new(10, 250, 0, 10),
            }],
        )
        .unwrap();
        for path in [
            pki.ca_cert(),
            pki.apiserver_cert(),
            pki.client_cert(&ADMIN),
            pki.client_cert(&SCHEDULER),
            pki.node_client_cert("real-0"),
            pki.kubelet_serving_cert("real-0"),
        ] {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{path:?}");
        }
        for path in [pki.apiserver_key(), pki.client_key(&ADMIN), pki.sa_key()] {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("PRIVATE KEY"), "{path:?}");
        }
        assert!(
            std::fs::read_to_string(pki.sa_pub())
                .unwrap()
                .contains("PUBLIC KEY")
        );
    }

    #[test]
    fn issues_more_client_certificates_from_the_saved_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(dir.path(), Ipv4Addr::new(10, 96, 0, 1), &[ADMIN], &[]).unwrap();
        let (cert, key) = pki
            .issue_client("replica-a", "chaos:replica-a", &["understudy:chaos"])
            .unwrap();
        assert_eq!(cert, dir.path().join("replica-a.crt"));
        assert!(
            std::fs::read_to_string(&cert)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(
            std::fs::read_to_string(&key)
                .unwrap()
                .contains("PRIVATE KEY")
        );
        // Without the CA's key there is nothing to sign with.
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        assert!(pki.issue_client("replica-b", "b", &[]).is_err());
    }
}
