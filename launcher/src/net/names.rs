//! The one place that names host interfaces.

/// Linux's interface name limit, without the trailing NUL.
pub const IFNAMSIZ: usize = cns_netns::IFNAMSIZ;

/// Host-side veth name for a workload: `cns-<name>`, or when that does not
/// fit in IFNAMSIZ, a prefix of it and a stable 6-hex-digit hash of the name.
pub fn host_veth_name(name: &str) -> String {
    cns_netns::host_veth_name(name)
}
