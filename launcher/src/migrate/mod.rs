//! Moving a live workload to another host over ssh (`cns migrate`, and
//! `cns receive` on the other side). wire.rs is the protocol
//! (docs/migration.md), send.rs the source, receive.rs the destination.

pub mod receive;
pub mod send;
pub mod wire;

pub use receive::receive;
pub use send::{Dest, MigrateOptions, MigrateReport, another_round, migrate, parse_dest};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_nothing_reaches_ssh_as_an_option() {
        assert_eq!(parse_dest("root@10.0.0.2:2222").expect("dest"), Dest { user: Some("root".into()), host: "10.0.0.2".into(), port: Some(2222) });
        assert_eq!(parse_dest("backup").expect("dest"), Dest { user: None, host: "backup".into(), port: None });
        for bad in ["", "-oProxyCommand=x", "root@-x", "a b", "h:0", "h:99999", "@h", "h;rm"] {
            assert!(parse_dest(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn precopy_rounds_go_on_only_while_the_dirty_set_shrinks() {
        assert!(another_round(1, None, 10_000));
        assert!(another_round(2, Some(10_000), 6_000));
        // Not under 70 % of the round before: it no longer converges.
        assert!(!another_round(3, Some(6_000), 4_500));
        // Little left: the final dump takes it.
        assert!(!another_round(2, Some(10_000), 63));
        assert!(!another_round(8, Some(1_000_000), 10));
        assert!(!another_round(8, Some(1_000_000), 100_000));
    }
}
