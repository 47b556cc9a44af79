//! One module per controller; each `register`s its informer handlers and
//! returns a [`crate::worker::Controller`] to run.

pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod persistentvolume;
pub mod podutil;
pub mod replicaset;
pub mod status_patch;
