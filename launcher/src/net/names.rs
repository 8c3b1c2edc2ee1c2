//! The one place that names host interfaces.
//!
//! `cns-NAME` when it fits Linux's 15 characters; else `cns-` and the first
//! four characters of the name, `~`, and 24 bits of a stable hash. Names
//! cannot contain `~`, so a short name never equals a long name's hashed
//! form; two long names whose hashes collide are refused at run and
//! restore ([`super::claimed_by_other`]), never given one interface.

/// Linux's interface name limit, without the trailing NUL.
pub const IFNAMSIZ: usize = cns_netns::IFNAMSIZ;

/// Host-side veth name for a workload.
pub fn host_veth_name(name: &str) -> String {
    let full = format!("cns-{name}");
    if full.len() <= IFNAMSIZ {
        return full;
    }
    // FNV-1a: stable across builds and platforms.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let hash = format!("{:06x}", h & 0x00ff_ffff);
    let keep = IFNAMSIZ - hash.len() - 1;
    format!("{}~{hash}", &full[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(host_veth_name("web"), "cns-web");
        assert_eq!(host_veth_name("abcdefghijk"), "cns-abcdefghijk");
    }

    #[test]
    fn long_names_fit_and_stay_distinct() {
        let a = host_veth_name("a-very-long-workload-name-1");
        let b = host_veth_name("a-very-long-workload-name-2");
        assert!(a.len() <= IFNAMSIZ, "{a}");
        assert!(b.len() <= IFNAMSIZ);
        assert_ne!(a, b);
        assert!(a.starts_with("cns-a-ve~"));
        assert_eq!(a, host_veth_name("a-very-long-workload-name-1"));
    }

    #[test]
    fn a_short_name_never_equals_a_hashed_one() {
        let long = host_veth_name("abcdefghijklmnop");
        let spelled = long.trim_start_matches("cns-");
        // The short name that would spell the hashed form is not a valid name.
        assert!(crate::workload::validate_name(spelled).is_err(), "{spelled}");
        // The old '-' form could be spelled by a short name.
        let dashed = spelled.replace('~', "-");
        assert!(crate::workload::validate_name(&dashed).is_ok());
        assert_ne!(host_veth_name(&dashed), long);
    }
}
