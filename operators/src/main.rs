//! understudy-controllers: Understudy's stand-in for kube-controller-manager's
//! Deployment, ReplicaSet, Endpoints and EndpointSlice controllers and its
//! PersistentVolume binder.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use understudy_component_base::{CommonArgs, Component, component};
use understudy_controllers::context::Settings;
use understudy_controllers::protobuf::ContentType;
use understudy_controllers::run::{Workers, run};
use understudy_controllers::selection;

const COMPONENT: Component = Component {
    name: "understudy-controllers",
    default_port: 10357,
    elects_leader: true,
};

#[derive(Parser, Debug)]
#[command(
    name = "understudy-controllers",
    version,
    about = "Understudy's stand-in for kube-controller-manager"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Controllers to run, as kube-controller-manager's flag: `*` for all,
    /// `name` to enable, `-name` to disable.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,

    /// Deployments reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_deployment_syncs: usize,

    /// ReplicaSets reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_replicaset_syncs: usize,

    /// Services whose Endpoints are reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_endpoint_syncs: usize,

    /// Services whose EndpointSlices are reconciled at once.
    #[arg(long, default_value_t = 5)]
    concurrent_service_endpoint_syncs: usize,

    /// Claims the PV binder syncs at once. Understudy's own: upstream syncs
    /// one claim at a time. Volumes are still synced one at a time.
    #[arg(long, default_value_t = understudy_controllers::controllers::persistentvolume::DEFAULT_CLAIM_WORKERS)]
    concurrent_persistentvolume_claim_syncs: usize,

    /// Endpoints in one EndpointSlice (1–1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    max_endpoints_per_slice: u16,

    /// Batches pod changes into one Endpoints update per period (0: none).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    endpoint_updates_batch_period: Duration,

    /// Batches pod changes into one EndpointSlice update per period (0: none).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    endpointslice_updates_batch_period: Duration,

    /// Content type of the Pod list and watch, as kube-controller-manager's
    /// flag: `application/vnd.kubernetes.protobuf` or `application/json`.
    /// Every other request is JSON.
    #[arg(long, default_value = "application/vnd.kubernetes.protobuf")]
    kube_api_content_type: ContentType,

    /// How often the PV binder syncs every claim and volume again.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pvclaimbinder_sync_period: Duration,

    /// Whether the PV binder asks provisioners for volumes of claims with a
    /// class (annotations and Events; nothing is provisioned here).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    enable_dynamic_provisioning: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let enabled = match selection::parse(&args.controllers) {
        Ok(enabled) => enabled,
        Err(e) => {
            eprintln!("understudy-controllers: --controllers: {e}");
            return ExitCode::from(2);
        }
    };
    let workers = Workers {
        deployment: args.concurrent_deployment_syncs,
        replicaset: args.concurrent_replicaset_syncs,
        endpoints: args.concurrent_endpoint_syncs,
        endpointslice: args.concurrent_service_endpoint_syncs,
        persistentvolume_claims: args.concurrent_persistentvolume_claim_syncs,
    };
    let settings = Settings {
        max_endpoints_per_slice: args.max_endpoints_per_slice as usize,
        endpoint_updates_batch_period: args.endpoint_updates_batch_period,
        endpointslice_updates_batch_period: args.endpointslice_updates_batch_period,
        api_content_type: args.kube_api_content_type,
        pvclaimbinder_sync_period: args.pvclaimbinder_sync_period,
        enable_dynamic_provisioning: args.enable_dynamic_provisioning,
    };
    component::main(COMPONENT, args.common, |ctx| {
        run(ctx, enabled, workers, settings)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pv_binder_flags_as_kube_controller_managers() {
        let args = Args::try_parse_from(["understudy-controllers"]).unwrap();
        assert_eq!(args.pvclaimbinder_sync_period, Duration::from_secs(15));
        assert!(args.enable_dynamic_provisioning);
        let args = Args::try_parse_from([
            "understudy-controllers",
            "--pvclaimbinder-sync-period=1m",
            "--enable-dynamic-provisioning=false",
        ])
        .unwrap();
        assert_eq!(args.pvclaimbinder_sync_period, Duration::from_secs(60));
        assert!(!args.enable_dynamic_provisioning);
    }

    #[test]
    fn content_type_flag_defaults_to_protobuf_as_upstream() {
        let args = Args::try_parse_from(["understudy-controllers"]).unwrap();
        assert_eq!(args.kube_api_content_type, ContentType::Protobuf);
        let args = Args::try_parse_from([
            "understudy-controllers",
            "--kube-api-content-type=application/json",
        ])
        .unwrap();
        assert_eq!(args.kube_api_content_type, ContentType::Json);
        assert!(
            Args::try_parse_from([
                "understudy-controllers",
                "--kube-api-content-type=application/yaml"
            ])
            .is_err()
        );
    }
}
