//! VolumeRestrictions (stub: to be implemented).

use std::sync::Arc;

use serde_json::Value;

use crate::framework::Plugin;

pub const NAME: &str = "VolumeRestrictions";

struct Stub;

impl Plugin for Stub {
    fn name(&self) -> &'static str {
        NAME
    }
}

pub fn new(_args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(Stub))
}
