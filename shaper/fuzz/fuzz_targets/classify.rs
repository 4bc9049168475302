//! Fuzzes the classifier with arbitrary frames (vnet header + Ethernet): it must never panic,
//! and a shaped verdict must charge at least the frame's L3 bytes.
//!
//!     cd shaper/fuzz && cargo fuzz run classify
#![no_main]

use libfuzzer_sys::fuzz_target;
use shaper::classify::{Classifier, Verdict};
use shaper::vnet::{VNET_HDR_LEN, VnetHdr};
use std::path::Path;
use std::sync::OnceLock;
use tollgate::config::Config;

const CONFIG: &str = r#"
[[tenant]]
name = "a"
sources = ["0.0.0.0/1"]
upload = "1mbit"
[[tenant]]
name = "b"
sources = ["128.0.0.0/1"]
upload = "1gbit"
ports = [22, "1000-2000"]
"#;

fn classifier() -> &'static Classifier {
    static C: OnceLock<Classifier> = OnceLock::new();
    C.get_or_init(|| Classifier::from_config(&Config::parse(CONFIG, Path::new("fuzz")).unwrap()))
}

fuzz_target!(|data: &[u8]| {
    let Some(vnet) = VnetHdr::parse(data) else {
        return;
    };
    let frame = &data[VNET_HDR_LEN..];
    if let Verdict::Tenant { cost, .. } = classifier().classify(&vnet, frame) {
        assert!(cost as usize >= frame.len().saturating_sub(14));
    }
});
