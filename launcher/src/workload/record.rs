//! The record of one workload (`workload.json`), its states, and every
//! change of state as a method: the one place that says what "running",
//! "dumped" or "exited" means for the record's fields.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::process::stat::{process_matches, process_start};

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !ok {
        return Err(Error::invalid(
            format!("invalid workload name {name:?}"),
            "names are 1-64 characters: a letter or digit, then letters, digits, '_', '.', '-'",
        ));
    }
    Ok(())
}

/// A generated name: `w-` and 8 random hex digits.
pub fn generate_name() -> String {
    format!("w-{:08x}", crate::files::random_u64() as u32)
}

/// Lifecycle states shown by `cns ps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Exited,
    Dumped,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
            State::Dumped => "dumped",
        })
    }
}

/// How a workload reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// A veth pair to the host (the default).
    Veth,
    /// Only `lo` in its own network namespace.
    None,
    /// An adopted host tree: the host's own network namespace.
    Host,
}

impl std::fmt::Display for NetMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetMode::Veth => "veth",
            NetMode::None => "none",
            NetMode::Host => "host",
        })
    }
}

impl std::str::FromStr for NetMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<NetMode> {
        match s {
            "veth" => Ok(NetMode::Veth),
            "none" => Ok(NetMode::None),
            _ => Err(Error::invalid(format!("unknown network mode {s:?}"), "use --net veth (default) or --net none")),
        }
    }
}

/// One published port: `[HOSTIP:]HOSTPORT:PORT`, TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PublishRepr")]
pub struct Publish {
    /// The host address to listen on (default: every address, 0.0.0.0).
    pub host_ip: Option<std::net::Ipv4Addr>,
    pub host_port: u16,
    /// The workload's port.
    pub port: u16,
}

/// Records before `HOSTIP` was accepted held `[HOSTPORT, PORT]` pairs.
#[derive(Deserialize)]
#[serde(untagged)]
enum PublishRepr {
    Pair(u16, u16),
    Full { host_ip: Option<std::net::Ipv4Addr>, host_port: u16, port: u16 },
}

impl From<PublishRepr> for Publish {
    fn from(r: PublishRepr) -> Publish {
        match r {
            PublishRepr::Pair(host_port, port) => Publish { host_ip: None, host_port, port },
            PublishRepr::Full { host_ip, host_port, port } => Publish { host_ip, host_port, port },
        }
    }
}

impl std::fmt::Display for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_ip {
            Some(ip) => write!(f, "{ip}:{}:{}", self.host_port, self.port),
            None => write!(f, "{}:{}", self.host_port, self.port),
        }
    }
}

/// Network settings of a workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetConfig {
    pub mode: NetMode,
    pub host_if: Option<String>,
    pub addrs: Option<cns_netns::LinkAddrs>,
    /// Published ports.
    #[serde(default)]
    pub publish: Vec<Publish>,
    /// Outbound access (NAT through the host); false: `--no-outbound`.
    #[serde(default)]
    pub outbound: bool,
}

/// The record of one workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub hostname: String,
    /// Unix seconds.
    pub created: u64,
    pub state: State,
    /// Host PID of the root process (the workload's PID 1).
    pub pid: Option<i32>,
    /// Start time of `pid` (clock ticks since boot) to tell it from a reused PID.
    pub pid_start: Option<u64>,
    /// Host PID of the monitor that waits for the root.
    pub shim_pid: Option<i32>,
    #[serde(default)]
    pub shim_start: Option<u64>,
    pub exit_code: Option<i32>,
    pub log: PathBuf,
    /// Where the log is bind-mounted inside the mount ns (stdout/stderr are
    /// opened there); `None` for adopted host trees.
    #[serde(default)]
    pub stdio_mount: Option<PathBuf>,
    pub net: NetConfig,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    pub seccomp: Option<PathBuf>,
    /// Image directory of the last dump.
    pub images: Option<PathBuf>,
    /// A host tree adopted with `dump --pid`.
    #[serde(default)]
    pub adopted: bool,
    /// Name of the checkpoint this one was restored from.
    pub restored_from: Option<String>,
    /// Namespace inodes of the root (pid, mnt, net, ...), filled at start.
    #[serde(default)]
    pub namespaces: std::collections::BTreeMap<String, u64>,
    /// Its own root, mounts and read-only root.
    #[serde(default)]
    pub confine: crate::confine::Confinement,
}

impl Workload {
    /// The current state, correcting `running` when the root is gone.
    pub fn live_state(&self) -> State {
        match (self.state, self.pid) {
            (State::Running, Some(pid)) if !process_matches(pid, self.pid_start) => State::Exited,
            (s, _) => s,
        }
    }

    /// The host PID, if the root is alive.
    pub fn live_pid(&self) -> Option<i32> {
        match self.live_state() {
            State::Running => self.pid,
            _ => None,
        }
    }

    /// The live root PID, or why there is none.
    pub fn running_pid(&self) -> Result<i32> {
        use crate::error::ErrorKind;
        match (self.live_state(), self.pid) {
            (State::Running, Some(pid)) => Ok(pid),
            (State::Dumped, _) => Err(Error::new(ErrorKind::State, format!("workload {} is dumped, not running", self.name))
                .with_hint(format!("restore it first: cns restore {}", self.name))),
            (s, _) => Err(Error::new(ErrorKind::State, format!("workload {} is not running (it is {s})", self.name))
                .with_hint(format!("see `cns logs {}`; remove it with `cns rm {}`", self.name, self.name))),
        }
    }

    /// The root (and its monitor) started: running, with a fresh exit status.
    pub fn mark_running(&mut self, pid: i32, monitor: i32) {
        self.state = State::Running;
        self.pid = Some(pid);
        self.pid_start = process_start(pid);
        self.shim_pid = Some(monitor);
        self.shim_start = process_start(monitor);
        self.exit_code = None;
        self.namespaces = crate::process::stat::namespace_inodes(pid);
    }

    /// A checkpoint of it is complete at `images`. The tree is gone unless
    /// it was left running.
    pub fn mark_dumped(&mut self, images: PathBuf, left_running: bool) {
        self.images = Some(images);
        if !left_running {
            self.state = State::Dumped;
            self.pid = None;
            self.pid_start = None;
        }
    }

    /// Only the checkpoint is kept (an adopted host tree, an import): no
    /// process, monitor or namespaces of its own.
    pub fn mark_checkpoint_only(&mut self, images: PathBuf) {
        self.mark_dumped(images, false);
        self.shim_pid = None;
        self.shim_start = None;
        self.namespaces = Default::default();
    }

    /// The root `pid` exited with `code`; false when the record has moved
    /// on meanwhile (dumped, restored under a new PID).
    pub fn mark_exited(&mut self, pid: i32, code: i32) -> bool {
        if self.state == State::Running && self.pid == Some(pid) {
            self.state = State::Exited;
            self.exit_code = Some(code);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "web", "A.b_c-1", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", ".a", "a/b", "..", "../x", "a b", "é", &"x".repeat(65), "_a"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        let g = generate_name();
        assert!(validate_name(&g).is_ok());
        assert_ne!(g, generate_name());
    }

    #[test]
    fn published_ports_read_old_pairs_and_new_objects() {
        let old: Vec<Publish> = serde_json::from_str("[[8080, 80]]").expect("pairs");
        assert_eq!(old, vec![Publish { host_ip: None, host_port: 8080, port: 80 }]);
        let p = Publish { host_ip: Some(std::net::Ipv4Addr::LOCALHOST), host_port: 1, port: 2 };
        let back: Publish = serde_json::from_str(&serde_json::to_string(&p).expect("json")).expect("json");
        assert_eq!(back, p);
        assert_eq!(p.to_string(), "127.0.0.1:1:2");
    }

    #[test]
    fn net_mode_keeps_its_json_spelling() {
        assert_eq!(serde_json::to_string(&NetMode::Veth).expect("json"), "\"veth\"");
        assert_eq!(serde_json::from_str::<NetMode>("\"host\"").expect("json"), NetMode::Host);
        assert!("host".parse::<NetMode>().is_err(), "host is not a --net choice");
    }
}
