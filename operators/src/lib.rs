//! understudy-controllers: Understudy's stand-in for the Deployment,
//! ReplicaSet, Endpoints and EndpointSlice controllers and the
//! PersistentVolume binder of kube-controller-manager. Shared informers feed per-controller work queues;
//! each controller reconciles one object per key, with upstream's behaviour.

pub mod context;
pub mod controllers;
pub mod expectations;
pub mod informer;
pub mod key;
pub mod lean;
pub mod metrics;
pub mod protobuf;
pub mod run;
pub mod selection;
pub mod worker;
pub mod workqueue;
