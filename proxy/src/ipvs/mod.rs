//! The IPVS mode (upstream's pkg/proxy/ipvs): Services as IPVS virtual
//! servers whose addresses sit on a dummy interface, with ipsets and a
//! constant set of iptables rules for masquerading and filtering. Our names
//! keep it apart from kube-proxy's: `understudy-ipvs0` for `kube-ipvs0`,
//! `US-` for `KUBE-` in set and chain names.
//!
//! Pure core: [`desired::desired_state`] computes what the kernel should
//! hold, [`diff::diff`] the ordered operations from what it holds, and
//! [`rules`] / [`ipsets`] the iptables and ipset texts; [`options`] reads
//! them from the configuration. IO: the [`reconcile`] loop applies the
//! operations through the [`reconcile::Ipvs`] trait ([`netlink`]: the
//! kernel's IPVS generic-netlink family) and the [`reconcile::Host`] trait
//! ([`host`]: `ip`, `ipset`, `iptables-restore`); [`system`] checks that
//! the kernel can run the mode, probes the scheduler and lists the sysctls;
//! [`cleanup`] removes what the mode made.
//!
//! Wired into the shared sync loop by `proxier::ipvs_backend` (start-up
//! checks, every sync, cleanup).

pub mod cleanup;
pub mod desired;
pub mod diff;
pub mod host;
pub mod ipsets;
pub mod model;
pub mod netlink;
pub mod options;
pub mod reconcile;
pub mod rules;
pub mod system;

pub use desired::{DUMMY_INTERFACE, Desired, DesiredOptions, desired_state};
pub use diff::{Current, CurrentService, DiffOptions, Operation, diff};
pub use model::{RealServer, RealServerState, ServiceKey, VirtualServer};
pub use options::IpvsOptions;
pub use reconcile::{Host, Ipvs, SyncError, SyncReport, sync};
