//! NodeResourcesFit and NodeResourcesBalancedAllocation, and the resource
//! accounting and scorers they share.

pub mod balanced_allocation;
pub mod fit;
pub mod scoring;
