//! Static PersistentVolumes with understudy-controllers' binder and
//! understudy-scheduler's VolumeBinding (the chart's pods), real pods on two
//! real nodes: the checks of understudy_e2e::volumes, which
//! tests/volumes_upstream.rs runs against kube-controller-manager's binder
//! and kube-scheduler.

understudy_e2e::volume_tests!(understudy_e2e::volumes::Stack::Understudy);
