//! The running proxy: watches feed the tracker, the bounded-frequency runner
//! syncs, and every outcome lands in kube-proxy's metrics and health.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::Api;
use kube::runtime::watcher;
use understudy_component_base::ComponentContext;

use crate::config::{KubeProxyConfiguration, ProxyMode};
use crate::exec::SystemExec;
use crate::health::{ProxyHealth, node_eligible};
use crate::ipvs::host::ToolHost;
use crate::metrics::Metrics;
use crate::proxier::{Backend, Iptables, IpvsBackend, NodeInfo, Proxier, SyncOutcome};
use crate::runner::{Intervals, Trigger, run_loop};
use crate::service_health::{self, ServiceHealthServers};
use crate::tracker::{IpFamily, ServiceName, Tracker};
use crate::watch::{Change, watch_objects};

/// The EndpointSlice annotation the endpoint controllers stamp with the time
/// of the change that caused the slice's update.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The readiness check that passes once the rules were first written.
const RULES_SYNCED: &str = "rules-synced";

/// One IP family's proxier and its sync runner: a dual-stack node runs one
/// of each family, each syncing on its own (upstream's metaproxier).
struct FamilyProxy {
    family: IpFamily,
    proxier: Mutex<Proxier<SystemExec>>,
    /// Trigger times of slice changes not yet programmed.
    trigger_times: Mutex<Vec<SystemTime>>,
    trigger: Trigger,
    /// Labelled with this family.
    metrics: Metrics,
    /// Its rules were written once.
    synced: AtomicBool,
}

struct Shared {
    /// The primary family's first.
    families: Vec<FamilyProxy>,
    /// Every ServiceCIDR's CIDRs, by name.
    service_cidrs: Mutex<std::collections::BTreeMap<String, Vec<IpNet>>>,
    /// Changes made before the proxy started are not its latency (upstream's
    /// trackerStartTime): their trigger times are not recorded.
    started: SystemTime,
    health: ProxyHealth,
    /// The primary family's labels, for what is not per family.
    metrics: Metrics,
    component_health: understudy_component_base::Health,
    service_health: ServiceHealthServers,
    /// Each family's health-checked Services as its last sync saw them.
    health_checks: Mutex<Vec<BTreeMap<ServiceName, (u16, usize)>>>,
    events: understudy_component_base::events::EventRecorder,
    node_name: String,
}

impl Shared {
    /// Something changed for `family`: ask for its sync, and count it as waiting.
    fn changed(&self, family: &FamilyProxy, proxier: &Proxier<SystemExec>) {
        let (services, endpoints) = proxier.tracker.pending_counts();
        family.metrics.pending(services, endpoints);
        let now = SystemTime::now();
        self.health.queued(family.family.address_type(), now);
        family.metrics.queued(now);
        family.trigger.run();
    }

    /// Applies a change to every family's proxier (`apply` says whether it
    /// changed that family's state); each changed family is asked to sync.
    /// Whether any changed.
    fn apply_each(
        &self,
        mut apply: impl FnMut(&FamilyProxy, &mut Proxier<SystemExec>) -> bool,
    ) -> bool {
        let mut any = false;
        for family in &self.families {
            let mut p = family.proxier.lock().unwrap();
            if apply(family, &mut p) {
                any = true;
                self.changed(family, &p);
            }
        }
        any
    }

    fn on_service(&self, change: Change<Service>) {
        let any = self.apply_each(|_, p| match &change {
            Change::Apply(s) => p.tracker.apply_service(s),
            Change::Delete(s) => p.tracker.delete_service(
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default(),
            ),
            Change::Listed => {
                p.set_services_synced();
                true
            }
        });
        if any && !matches!(change, Change::Listed) {
            self.metrics.service_changes_total.inc();
        }
    }

    fn on_slice(&self, change: Change<EndpointSlice>) {
        let any = self.apply_each(|family, p| match &change {
            Change::Apply(s) => {
                let changed = p.tracker.apply_endpoint_slice(s);
                if changed
                    && let Some(at) = trigger_time(s)
                    && at > self.started
                {
                    family.trigger_times.lock().unwrap().push(at);
                }
                changed
            }
            Change::Delete(s) => p.tracker.delete_endpoint_slice(s),
            Change::Listed => {
                p.set_slices_synced();
                true
            }
        });
        if any && !matches!(change, Change::Listed) {
            self.metrics.endpoint_changes_total.inc();
        }
    }

    /// As upstream's ServiceCIDRConfig: the union of every ServiceCIDR's
    /// CIDRs goes to the proxiers, which use it from their next full sync.
    fn on_service_cidr(&self, change: Change<ServiceCIDR>) {
        let mut all = self.service_cidrs.lock().unwrap();
        match change {
            Change::Apply(object) => {
                let cidrs = (object.spec.as_ref())
                    .and_then(|s| s.cidrs.as_ref())
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.parse().ok())
                    .collect();
                all.insert(object.metadata.name.unwrap_or_default(), cidrs);
            }
            Change::Delete(object) => {
                all.remove(&object.metadata.name.unwrap_or_default());
            }
            Change::Listed => return,
        }
        let mut union: Vec<IpNet> = all.values().flatten().copied().collect();
        union.sort();
        union.dedup();
        drop(all);
        for family in &self.families {
            family.proxier.lock().unwrap().set_service_cidrs(&union);
        }
    }

    fn on_node(&self, change: Change<Node>) {
        let node = match change {
            Change::Apply(node) => Some(node),
            Change::Delete(_) => None,
            Change::Listed => return,
        };
        self.health.set_node_eligible(node_eligible(node.as_ref()));
        let Some(node) = node else { return };
        let labels: BTreeMap<String, String> = node
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let info = node_info(&node);
        self.apply_each(|_, p| {
            let mut changed = p.tracker.set_node_labels(labels.clone());
            let info = NodeInfo {
                // Read at each sync, not from the Node.
                interface_ips: p.node.interface_ips.clone(),
                ..info.clone()
            };
            if info != p.node {
                // Node IPs and pod CIDRs appear in rules of every service.
                p.node = info;
                p.force_full_sync();
                changed = true;
            }
            changed
        });
    }

    /// As upstream: an error log and a Warning Event on the Service.
    fn report_health_check(&self, failed: &service_health::FailedToListen) {
        tracing::error!(
            error = %failed.error,
            node = %self.node_name,
            service = %failed.service,
            port = failed.port,
            "Failed to start healthcheck"
        );
        let service = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(failed.service.namespace.clone()),
            name: Some(failed.service.name.clone()),
            ..Default::default()
        };
        self.events.record(
            &service,
            understudy_component_base::events::EventType::Warning,
            service_health::FailedToListen::REASON,
            service_health::FailedToListen::ACTION,
            failed.message(&self.node_name),
        );
    }

    /// The health-check servers every family's Services need, with `index`'s
    /// as its sync just saw them. A dual-stack Service has one
    /// healthCheckNodePort: one server, answering with the larger of its
    /// families' local endpoint counts (a dual-stack pod is one endpoint).
    fn health_checks(
        &self,
        index: usize,
        mine: BTreeMap<ServiceName, (u16, usize)>,
    ) -> BTreeMap<ServiceName, (u16, usize)> {
        let mut all = self.health_checks.lock().unwrap();
        all[index] = mine;
        let mut merged: BTreeMap<ServiceName, (u16, usize)> = BTreeMap::new();
        for (name, &(port, local)) in all.iter().flatten() {
            let entry = merged.entry(name.clone()).or_insert((port, local));
            entry.1 = entry.1.max(local);
        }
        merged
    }

    /// One sync of the `index`th family and its bookkeeping; false asks its
    /// runner for a retry.
    fn sync(&self, index: usize) -> bool {
        let family = &self.families[index];
        let start = Instant::now();
        let mut p = family.proxier.lock().unwrap();
        p.node.interface_ips = interface_addresses();
        let outcome = p.sync();
        if matches!(outcome, SyncOutcome::Synced(_)) {
            // Under the same lock, as upstream at the end of syncProxyRules.
            use crate::conntrack::{NetlinkConntrack, after_sync};
            after_sync(&NetlinkConntrack, &mut p.tracker, &family.metrics);
        }
        let (services, endpoints) = p.tracker.pending_counts();
        let health_checks = service_health::desired(&p.tracker);
        drop(p);
        family.metrics.pending(services, endpoints);
        match outcome {
            SyncOutcome::NotInitialized => {
                tracing::debug!("not syncing until Services and EndpointSlices are listed");
                true
            }
            SyncOutcome::Synced(report) => {
                let now = SystemTime::now();
                family.metrics.synced(&report, now);
                self.health.updated(family.family.address_type(), now);
                for at in std::mem::take(&mut *family.trigger_times.lock().unwrap()) {
                    family.metrics.programmed(at, now);
                }
                family.synced.store(true, Ordering::Relaxed);
                if self
                    .families
                    .iter()
                    .all(|f| f.synced.load(Ordering::Relaxed))
                {
                    self.component_health.set(RULES_SYNCED, true);
                }
                let failed = self
                    .service_health
                    .sync(&self.health_checks(index, health_checks));
                for failed in &failed {
                    self.report_health_check(failed);
                }
                tracing::info!(
                    ip_family = family.family.address_type(),
                    full = report.full,
                    elapsed = ?report.duration,
                    written = ?report.written,
                    "SyncProxyRules complete"
                );
                // A port that could not be opened is tried again a sync
                // period later, not only when some Service next changes.
                failed.is_empty()
            }
            SyncOutcome::Failed {
                full,
                error,
                restore,
            } => {
                family.metrics.failed(full, restore, start.elapsed());
                tracing::error!(
                    ip_family = family.family.address_type(),
                    full,
                    %error,
                    "sync failed; the next sync is full"
                );
                false
            }
        }
    }
}

fn trigger_time(slice: &EndpointSlice) -> Option<SystemTime> {
    let text = slice
        .metadata
        .annotations
        .as_ref()?
        .get(TRIGGER_TIME_ANNOTATION)?;
    let ts: jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(ts))
}

/// The Node's addresses (InternalIP first, as upstream's primary IP) and pod CIDRs.
/// The addresses on this network namespace's interfaces (getifaddrs, as
/// Go's net.InterfaceAddrs upstream reads); none when they cannot be read.
fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        tracing::warn!(
            "reading the interfaces' addresses failed: nodePortAddresses CIDRs match the Node's addresses"
        );
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = addrs
        .filter_map(|a| {
            let address = a.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

pub fn node_info(node: &Node) -> NodeInfo {
    let status = node.status.as_ref();
    let addresses = status.and_then(|s| s.addresses.as_ref());
    let mut ips: Vec<IpAddr> = Vec::new();
    for kind in ["InternalIP", "ExternalIP"] {
        for a in addresses.into_iter().flatten().filter(|a| a.type_ == kind) {
            if let Ok(ip) = a.address.parse()
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    }
    let spec = node.spec.as_ref();
    let pod_cidrs: Vec<IpNet> = (spec.and_then(|s| s.pod_cidrs.clone()))
        .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    NodeInfo {
        ips,
        pod_cidrs,
        interface_ips: Vec::new(),
    }
}

/// The node sysctls upstream's iptables mode sets. route_localnet is set
/// only when NodePorts answer on localhost (then the rules guard 127.0.0.0/8
/// from outside), and failing to set it is fatal, as upstream; the rest is
/// best-effort. Returns whether nf_conntrack_tcp_be_liberal is set. The
/// nftables mode needs none of them: it never serves NodePorts on
/// localhost (no route_localnet) and drops no INVALID packets; it checks
/// the kernel instead, as upstream. The IPVS mode sets its own
/// ([`ipvs_backend`]).
fn prepare_node(config: &KubeProxyConfiguration) -> anyhow::Result<bool> {
    // Upstream's platformSetup (every mode), before any proxier exists.
    crate::conntrack::sysctls::apply(
        &config.conntrack,
        crate::conntrack::sysctls::online_cpus(),
        &mut crate::conntrack::sysctls::SystemKnobs,
    )?;
    if config.mode == ProxyMode::Ipvs {
        return Ok(false);
    }
    if config.mode == ProxyMode::Nftables {
        if std::env::var_os(crate::proxier::SKIP_KERNEL_CHECK_ENV).is_none_or(|v| v.is_empty()) {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            crate::proxier::check_kernel(&release).map_err(anyhow::Error::msg)?;
        }
        return Ok(false);
    }
    // Only IPv4 serves NodePorts on loopback.
    if crate::iptables::localhost_node_ports(config, IpFamily::V4) {
        tracing::info!(
            "setting route_localnet=1 to allow NodePorts on localhost; to change this either disable \
             iptables.localhostNodePorts or set nodePortAddresses to leave out loopback addresses"
        );
        ensure_sysctl("/proc/sys/net/ipv4/conf/all/route_localnet", 1)?;
    }
    match std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables") {
        Ok(v) if v.trim() == "1" => {}
        _ => tracing::warn!(
            "net.bridge.bridge-nf-call-iptables is not 1: pods on a bridge may bypass the service rules"
        ),
    }
    Ok(
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal")
            .is_ok_and(|v| v.trim() == "1"),
    )
}

/// The IPVS mode's start-up on a kernel that passed the preflight in
/// `main` (upstream's CanUseIPVSProxier scheduler probe and NewProxier):
/// the scheduler probe, the sysctls (fatal when one cannot be set), the
/// timeouts; then the backend, on the kernel's IPVS and the node's tools.
fn ipvs_backend(
    config: &KubeProxyConfiguration,
    family: IpFamily,
) -> anyhow::Result<Backend<SystemExec>> {
    use crate::ipvs::netlink::NetlinkIpvs;
    let mut ipvs =
        NetlinkIpvs::open().map_err(|e| anyhow::anyhow!("can't use the IPVS proxier: {e}"))?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kernel = crate::ipvs::system::kernel_version(&release)
        .ok_or_else(|| anyhow::anyhow!("failed to get kernel version from {:?}", release.trim()))?;
    let timeouts =
        crate::proxier::ipvs_backend::prepare(&mut ipvs, config, kernel, &mut |path, value| {
            let value = i32::try_from(value).unwrap_or(i32::MAX);
            ensure_sysctl(&format!("/proc/sys/{path}"), value).map_err(|e| e.to_string())
        })
        .map_err(|e| anyhow::anyhow!("can't use the IPVS proxier: {e}"))?;
    if let Some((tcp, tcp_fin, udp)) = timeouts
        && let Err(error) = ipvs.configure_timeouts(tcp, tcp_fin, udp)
    {
        tracing::error!(%error, "Failed to configure IPVS timeouts");
    }
    let exec = SystemExec::default();
    Ok(Backend::Ipvs(IpvsBackend {
        iptables: Iptables {
            exec: exec.clone(),
            family,
        },
        ipvs: Box::new(ipvs),
        host: Box::new(ToolHost::new(exec)),
    }))
}

/// Writes a sysctl unless it already has the value (upstream's EnsureSysctl).
fn ensure_sysctl(path: &str, value: i32) -> anyhow::Result<()> {
    if let Ok(v) = std::fs::read_to_string(path)
        && v.trim().parse::<i32>() == Ok(value)
    {
        return Ok(());
    }
    std::fs::write(path, value.to_string())
        .map_err(|e| anyhow::anyhow!("cannot set {path} to {value}: {e}"))
}

fn mode_name(mode: ProxyMode) -> &'static str {
    match mode {
        ProxyMode::Iptables => "iptables",
        ProxyMode::Nftables => "nftables",
        ProxyMode::Ipvs => "ipvs",
    }
}

/// The node's primary IP family, as upstream's detectNodeIPs: a specific
/// `bindAddress`'s, else the Node's first address's (InternalIP first),
/// else IPv4. The Node is asked for as upstream does, for up to 30 s.
async fn primary_family(client: &kube::Client, node_name: &str, bind: IpAddr) -> IpFamily {
    if !bind.is_unspecified() {
        return IpFamily::of(&bind);
    }
    let nodes = Api::<Node>::all(client.clone());
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match nodes.get_opt(node_name).await {
            Ok(Some(node)) => {
                if let Some(ip) = node_info(&node).ips.first() {
                    return IpFamily::of(ip);
                }
                break;
            }
            Ok(None) => tracing::info!(node = node_name, "Failed to retrieve node info: not found"),
            Err(error) => tracing::info!(node = node_name, %error, "Failed to retrieve node info"),
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    tracing::info!(
        "Can't determine this node's IP, assuming loopback; if this is incorrect, please set the --bind-address flag"
    );
    IpFamily::V4
}

pub async fn run(
    ctx: ComponentContext,
    config: KubeProxyConfiguration,
    node_name: String,
) -> anyhow::Result<()> {
    let primary = primary_family(&ctx.client, &node_name, config.bind_address).await;
    let metrics = Metrics::register(
        &mut ctx.registry.write().expect("registry lock"),
        primary,
        config.mode,
    );
    let sync_period = config.sync_period();
    let health = ProxyHealth::new(2 * sync_period);
    for (path, with_node) in [("/healthz", true), ("/livez", false)] {
        let (health, metrics) = (health.clone(), metrics.clone());
        ctx.health.override_endpoint(
            path,
            Arc::new(move || {
                let answer = health.answer(with_node, SystemTime::now());
                metrics.health_answered(path, answer.status);
                answer
            }),
        );
    }
    ctx.health.register(RULES_SYNCED);

    // As upstream's platformCleanup: what the other mode left (the node
    // switched modes) would keep answering beside ours. Best-effort.
    // Only the nftables mode removes IPVS leftovers.
    let mut ipvs = match config.mode {
        ProxyMode::Nftables => {
            crate::proxier::ipvs_backend::open_for_cleanup().unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot open IPVS to remove the IPVS mode's leftovers");
                None
            })
        }
        _ => None,
    };
    let ipvs_ref = ipvs.as_mut().map(|i| i as &mut dyn crate::ipvs::Ipvs);
    match crate::proxier::cleanup_other_mode(config.mode, SystemExec::default(), ipvs_ref) {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(?removed, "removed the other proxy mode's rules")
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "removing the other proxy mode's rules"),
    }
    let mode = config.mode;
    let liberal = prepare_node(&config)?;
    let intervals = Intervals {
        min: config.min_sync_period(),
        retry: sync_period,
        // Upstream's IPVS runner syncs at least every syncPeriod: that is
        // also when draining real servers are looked at again.
        max: if mode == ProxyMode::Ipvs {
            sync_period
        } else {
            crate::proxier::FULL_SYNC_PERIOD
        },
    };
    // Dual-stack wherever the node's tools and kernel take both families,
    // as upstream's platformCheckSupported; the primary family must work.
    let mut families = Vec::new();
    for family in [primary, primary.other()] {
        let tracker = Tracker::new(family, node_name.clone());
        let mut proxier = if mode == ProxyMode::Ipvs {
            Proxier::with_backend(config.clone(), tracker, ipvs_backend(&config, family)?)
        } else {
            Proxier::new(config.clone(), tracker, SystemExec::default())
        };
        proxier.set_conntrack_tcp_liberal(liberal);
        // The IPVS mode has no rules check; its family works where that
        // family's iptables does (upstream asks the same of it).
        let works = if mode == ProxyMode::Ipvs {
            let iptables = Iptables {
                exec: SystemExec::default(),
                family,
            };
            iptables.chain_exists("nat", "POSTROUTING")
        } else {
            proxier.check_intact()
        };
        match works {
            Ok(_) => families.push(FamilyProxy {
                family,
                proxier: Mutex::new(proxier),
                trigger_times: Mutex::default(),
                trigger: Trigger::default(),
                metrics: metrics.for_family(family),
                synced: AtomicBool::new(false),
            }),
            Err(e) if family == primary => {
                anyhow::bail!("{} does not work here: {e}", mode_name(mode))
            }
            Err(error) => tracing::info!(
                ip_family = family.address_type(),
                %error,
                "DualStack is not supported: the {} mode does not work for {}",
                mode_name(mode),
                family.address_type()
            ),
        }
    }
    if families.len() == 2 {
        tracing::info!(
            primary_ip_family = primary.address_type(),
            "kube-proxy running in dual-stack mode"
        );
    } else {
        tracing::info!(
            ip_family = primary.address_type(),
            "kube-proxy running in single-stack mode"
        );
    }
    let family_count = families.len();
    let shared = Arc::new(Shared {
        families,
        service_cidrs: Mutex::default(),
        started: SystemTime::now(),
        service_health: ServiceHealthServers::new(
            tokio::runtime::Handle::current(),
            Arc::new({
                let health = health.clone();
                move || health.healthy(SystemTime::now())
            }),
        ),
        health_checks: Mutex::new(vec![BTreeMap::new(); family_count]),
        health,
        metrics,
        component_health: ctx.health.clone(),
        events: ctx.events.clone(),
        node_name: node_name.clone(),
    });
    tracing::info!(node = %node_name, ?intervals, "{} proxier running", mode_name(mode));
    // As upstream's "Starting" Event on the Node it serves.
    let node_ref = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node_name.clone()),
        ..Default::default()
    };
    ctx.events.record(
        &node_ref,
        understudy_component_base::events::EventType::Normal,
        "Starting",
        "StartKubeProxy",
        String::new(),
    );
    if mode == ProxyMode::Ipvs {
        // Upstream's words, logged and recorded as it does.
        let message = "The ipvs proxier has been deprecated and will be disabled by default in \
                       Kubernetes 1.40 and removed in Kubernetes 1.43. Migrate to the 'nftables' \
                       proxier instead.";
        tracing::error!("{message}");
        ctx.events.record(
            &node_ref,
            understudy_component_base::events::EventType::Warning,
            "IPVSDeprecation",
            "StartKubeProxy",
            message.to_string(),
        );
    }

    let mut tasks = tokio::task::JoinSet::new();
    let client = ctx.client.clone();
    let s = shared.clone();
    tasks.spawn(watch_objects(
        Api::<Service>::all(client.clone()),
        // Upstream skips headless Services at the source.
        watcher::Config::default()
            .labels("!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"),
        move |c| s.on_service(c),
    ));
    let s = shared.clone();
    tasks.spawn(watch_objects(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default()
            .labels("!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"),
        move |c| s.on_slice(c),
    ));
    // Watched in every mode, as upstream (only the nftables mode uses them),
    // so the API sees the same requests whichever mode runs.
    let s = shared.clone();
    tasks.spawn(watch_objects(
        Api::<ServiceCIDR>::all(client.clone()),
        watcher::Config::default(),
        move |c| s.on_service_cidr(c),
    ));
    let s = shared.clone();
    tasks.spawn(watch_objects(
        Api::<Node>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
        move |c| s.on_node(c),
    ));

    // Upstream's iptables Monitor: a flushed table loses our canary (and
    // our rules with it); then everything is written again. The nftables
    // mode watches its own table the same way (a deleted or flushed table).
    // Each family's rules are checked and synced on their own.
    let mut runners = tokio::task::JoinSet::new();
    for index in 0..shared.families.len() {
        let s = shared.clone();
        let stop = ctx.shutdown.clone();
        tasks.spawn(async move {
            let family = &s.families[index];
            let mut tick = tokio::time::interval(sync_period);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let check = family.proxier.lock().unwrap().intact_check();
                let intact = tokio::task::spawn_blocking(move || check.run()).await;
                match intact {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        tracing::info!(
                            ip_family = family.family.address_type(),
                            "{} rules missing: they were flushed; full sync",
                            mode_name(mode)
                        );
                        family.proxier.lock().unwrap().force_full_sync();
                        family.trigger.run();
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "checking that our rules are in place")
                    }
                    Err(e) => tracing::warn!(error = %e, "canary check panicked"),
                }
            }
        });

        let s = shared.clone();
        runners.spawn(run_loop(
            intervals,
            shared.families[index].trigger.clone(),
            ctx.shutdown.clone(),
            move || {
                let s = s.clone();
                async move {
                    tokio::task::spawn_blocking(move || s.sync(index))
                        .await
                        .unwrap_or(false)
                }
            },
        ));
    }
    while runners.join_next().await.is_some() {}
    tasks.abort_all();
    Ok(())
}
