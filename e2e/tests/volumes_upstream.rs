//! The storage checks of tests/volumes.rs against upstream v1.37.2:
//! kube-controller-manager's persistentvolume-binder-controller and
//! kube-scheduler's VolumeBinding. What ours must match.

understudy_e2e::volume_tests!(understudy_e2e::volumes::Stack::Upstream);
