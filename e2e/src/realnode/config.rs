//! The files a real node runs from: containerd's config, the CNI network and
//! the kubelet's configuration — pure renderers, so what each setting is for
//! is tested on the text.
//!
//! This machine's kernel shapes a few of them (see shared/realnode/RECIPE.md):
//! cgroup v1 (`failCgroupV1: false`, cgroupfs driver) and no CAP_SYS_RESOURCE
//! (containerd's `restrict_oom_score_adj`, or runc fails every pod on the
//! negative OOM scores the kubelet asks for).

use std::path::{Path, PathBuf};

use super::plan::NodePlan;

/// Where a node keeps everything; all of it under the node's directory.
#[derive(Clone, Debug)]
pub struct NodePaths {
    pub dir: PathBuf,
}

impl NodePaths {
    pub fn containerd_config(&self) -> PathBuf {
        self.dir.join("containerd/config.toml")
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }
    pub fn kubelet_dir(&self) -> PathBuf {
        self.dir.join("kubelet")
    }
    pub fn kubelet_config(&self) -> PathBuf {
        self.dir.join("kubelet-config.yaml")
    }
    pub fn kubelet_kubeconfig(&self) -> PathBuf {
        self.dir.join("kubelet.kubeconfig")
    }
    pub fn kube_proxy_config(&self) -> PathBuf {
        self.dir.join("kube-proxy-config.yaml")
    }
    pub fn kube_proxy_kubeconfig(&self) -> PathBuf {
        self.dir.join("kube-proxy.kubeconfig")
    }
    /// The node's private mount namespace, kept by a bind mount of its nsfs
    /// file; it lives in a directory that is a private mount of its own, as
    /// a persistent mount namespace requires.
    pub fn mount_ns_dir(&self) -> PathBuf {
        self.dir.join("ns")
    }
    pub fn mount_ns(&self) -> PathBuf {
        self.mount_ns_dir().join("mnt")
    }
    /// Bound over /var/log inside the node, so pod logs stay the node's own.
    pub fn var_log(&self) -> PathBuf {
        self.dir.join("var-log")
    }
}

/// containerd 1.6 (config version 2), everything under the node's directory.
pub fn containerd_toml(paths: &NodePaths, sandbox_image: &str) -> String {
    let d = paths.dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{sandbox_image}"
    enable_selinux = false
    # Pods' network namespaces are kept under the node's state directory, not
    # in the machine's /run/netns, which every node (and lab) shares.
    netns_mounts_under_state_dir = true
    # Without CAP_SYS_RESOURCE runc cannot write the negative oom_score_adj the
    # kubelet asks for (-998 for sandboxes): clamp to containerd's own score.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "/usr/sbin/runc"
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{cni}"
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/containerd/opt"
"#,
        socket = paths.containerd_socket().display(),
        cni = paths.cni_conf_dir().display(),
    )
}

/// A bridge network with host-local addresses from the node's pod CIDR; the
/// other nodes' pod CIDRs are routed by the node's netns, not by CNI.
pub fn cni_conflist(paths: &NodePaths, node: &NodePlan) -> String {
    let conf = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "understudy-lab",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                // Pods talk to other nodes' pods and to the node network by
                // their own addresses: the node's routes carry them.
                "ipMasq": false,
                // A pod reaching itself through a Service's address.
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.pod_cidr()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": paths.dir.join("cni/ipam"),
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    serde_json::to_string_pretty(&conf).expect("static JSON")
}

/// Files the kubelet is told about.
pub struct KubeletFiles<'a> {
    pub client_ca: &'a Path,
    pub serving_cert: &'a Path,
    pub serving_key: &'a Path,
}

/// KubeletConfiguration (kubelet.config.k8s.io/v1beta1).
pub fn kubelet_yaml(paths: &NodePaths, node: &NodePlan, files: &KubeletFiles) -> String {
    let socket = format!("unix://{}", paths.containerd_socket().display());
    let ip = node.ip().to_string();
    let conf = serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // This machine has cgroup v1 and no systemd.
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": true,
        "cgroupRoot": node.cgroup_root(),
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": false,
        "containerRuntimeEndpoint": socket,
        "imageServiceEndpoint": socket,
        // The apiserver reaches the kubelet (logs, exec) with its own client
        // certificate, and asks the apiserver what each caller may do — as
        // kubeadm sets a kubelet up.
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": files.client_ca},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": files.serving_cert,
        "tlsPrivateKeyFile": files.serving_key,
        "address": ip,
        "port": 10250,
        "readOnlyPort": 0,
        // On the node's address: the lab probes it from the host.
        "healthzBindAddress": ip,
        "healthzPort": 10248,
        "serializeImagePulls": false,
        "podLogsDir": "/var/log/pods",
        "maxPods": 110,
        // Only pods meant for a real node land here: the kwok-node tests'
        // pods (fake images, capacity sums) keep to the fake nodes.
        "registerWithTaints": [{
            "key": super::REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule",
        }],
        // Images are imported, never pulled: a garbage-collected one is gone,
        // and a small test disk must not evict pods.
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
    });
    serde_yaml::to_string(&conf).expect("static YAML")
}

/// The lab's proxies (kube-proxy's file and the chart's `proxy.config`) set
/// conntrack's UDP stream timeout away from the kernel's 120 s, so a test
/// sees each proxy apply its configuration file.
pub const LAB_UDP_STREAM_TIMEOUT: &str = "150s";

/// KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) for upstream
/// kube-proxy on a real node, until understudy-proxy takes its place.
pub fn kube_proxy_yaml(
    paths: &NodePaths,
    node: &NodePlan,
    cluster_cidr: &str,
    mode: crate::chart::ProxyMode,
) -> String {
    let ip = node.ip().to_string();
    let conf = serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": mode.as_str(),
        "clientConnection": {"kubeconfig": paths.kube_proxy_kubeconfig()},
        "hostnameOverride": node.name(),
        "clusterCIDR": cluster_cidr,
        "bindAddress": ip,
        "healthzBindAddress": format!("{ip}:10256"),
        "metricsBindAddress": format!("{ip}:10249"),
        // nf_conntrack_max is the machine's, read-only in a namespace: leave it.
        "conntrack": {"maxPerCore": 0, "udpStreamTimeout": LAB_UDP_STREAM_TIMEOUT},
    });
    serde_yaml::to_string(&conf).expect("static YAML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realnode::plan::LabNetwork;

    fn paths() -> NodePaths {
        NodePaths {
            dir: "/var/lib/understudy-lab/s0/n0".into(),
        }
    }

    #[test]
    fn containerd_keeps_to_the_node_directory_and_clamps_oom_scores() {
        let text = containerd_toml(&paths(), "localhost/understudy-pause:dev");
        let doc: toml::Value = toml::from_str(&text).unwrap();
        let cri = &doc["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(cri["netns_mounts_under_state_dir"].as_bool(), Some(true));
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("localhost/understudy-pause:dev")
        );
        assert_eq!(
            doc["grpc"]["address"].as_str(),
            Some("/var/lib/understudy-lab/s0/n0/containerd/containerd.sock")
        );
        for key in ["root", "state"] {
            assert!(
                doc[key]
                    .as_str()
                    .unwrap()
                    .starts_with("/var/lib/understudy-lab/s0/n0/")
            );
        }
    }

    #[test]
    fn pods_get_addresses_from_the_nodes_own_range() {
        let node = LabNetwork { slot: 3 }.node(2);
        let conf: serde_json::Value = serde_json::from_str(&cni_conflist(&paths(), &node)).unwrap();
        assert_eq!(
            conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.203.2.0/24"
        );
        assert_eq!(conf["plugins"][0]["ipMasq"], false);
    }

    #[test]
    fn kubelet_authenticates_callers_and_uses_its_own_cgroup_branch() {
        let node = LabNetwork { slot: 1 }.node(0);
        let files = KubeletFiles {
            client_ca: Path::new("/pki/ca.crt"),
            serving_cert: Path::new("/pki/real-0.crt"),
            serving_key: Path::new("/pki/real-0.key"),
        };
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&kubelet_yaml(&paths(), &node, &files)).unwrap();
        assert_eq!(doc["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(doc["authorization"]["mode"], "Webhook");
        assert_eq!(doc["cgroupRoot"], "/understudy-lab-s1-n0");
        assert_eq!(doc["failCgroupV1"], false);
        assert_eq!(doc["address"], "10.250.1.10");
        assert_eq!(doc["tlsCertFile"], "/pki/real-0.crt");
    }

    #[test]
    fn kube_proxy_leaves_the_machines_conntrack_table_alone() {
        let net = LabNetwork { slot: 2 };
        let render = |mode| -> serde_yaml::Value {
            serde_yaml::from_str(&kube_proxy_yaml(
                &paths(),
                &net.node(1),
                &net.cluster_cidr(),
                mode,
            ))
            .unwrap()
        };
        let doc = render(crate::chart::ProxyMode::Nftables);
        assert_eq!(doc["mode"], "nftables");
        assert_eq!(doc["conntrack"]["maxPerCore"], 0);
        assert_eq!(doc["clusterCIDR"], "10.202.0.0/16");
        assert_eq!(doc["hostnameOverride"], "real-1");
        assert_eq!(doc["healthzBindAddress"], "10.250.2.11:10256");
        assert_eq!(render(crate::chart::ProxyMode::Ipvs)["mode"], "ipvs");
    }
}
