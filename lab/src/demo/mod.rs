//! The demo (`tollgate-demo`): the shaper part and the gateway part.

pub mod gateway;
pub mod shaper;
