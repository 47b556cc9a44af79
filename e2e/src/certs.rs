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

    /// Writes a fresh PKI into `dir`. The service cluster IP (first address of the
    /// service range) is a SAN so in-cluster clients can verify the apiserver.
    pub fn create(
        dir: &Path,
        service_ip: Ipv4Addr,
        clients: &[ClientIdentity],
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
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("CA"))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "understudy-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
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
            let key = KeyPair::generate().map_err(gen_err(id.user))?;
            let mut params =
                CertificateParams::new(Vec::<String>::new()).map_err(gen_err(id.user))?;
            params.distinguished_name.push(DnType::CommonName, id.user);
            for group in id.groups {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, *group);
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &issuer).map_err(gen_err(id.user))?;
            write(&pki.client_cert(id), &cert.pem())?;
            write(&pki.client_key(id), &key.serialize_pem())?;
        }

        let sa_key = KeyPair::generate().map_err(gen_err("service account key"))?;
        write(&pki.sa_key(), &sa_key.serialize_pem())?;
        write(&pki.sa_pub(), &sa_key.public_key_pem())?;
        Ok(pki)
    }
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
        let pki =
            Pki::create(dir.path(), Ipv4Addr::new(10, 96, 0, 1), &[ADMIN, SCHEDULER]).unwrap();
        for path in [
            pki.ca_cert(),
            pki.apiserver_cert(),
            pki.client_cert(&ADMIN),
            pki.client_cert(&SCHEDULER),
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
}
