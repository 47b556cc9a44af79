//! The Understudy lab: a local Kubernetes control plane built from the upstream
//! binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok),
//! the `understudy-lab` CLI over it, and the fixtures the e2e suite runs on.

pub mod audit;
pub mod bench;
pub mod binder;
pub mod certs;
pub mod chaos;
pub mod chart;
pub mod controlplane;
pub mod datapath;
pub mod differential;
pub mod fake_nodes;
pub mod fixture;
pub mod images;
pub mod kubeconfig;
pub mod kwok_stages;
pub mod nodes;
pub mod pods;
pub mod probe;
pub mod process;
pub mod realnode;
pub mod state;
pub mod toolchain;
pub mod understudies;
pub mod volumes;
pub mod wait;
pub mod workloads;
