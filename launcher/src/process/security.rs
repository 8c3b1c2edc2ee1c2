//! Capabilities and seccomp for the workload's command. Both are parsed and
//! compiled in the parent, before any namespace exists, so a bad flag is an
//! error before anything starts; the child only applies them.

use std::collections::HashSet;
use std::path::Path;

use caps::{CapSet, Capability};
use seccompiler::BpfProgram;

use crate::bail_hint;
use crate::error::{Context, Error, Result};

/// Capabilities to drop.
#[derive(Debug, Clone, Default)]
pub struct CapDrop {
    pub caps: HashSet<Capability>,
}

/// Parses `--cap-drop` values: `all`, `CAP_NET_RAW`, `net_raw`.
pub fn parse_cap_drop(values: &[String]) -> Result<CapDrop> {
    let mut caps = HashSet::new();
    for v in values {
        if v.eq_ignore_ascii_case("all") {
            caps.extend(caps::all());
            continue;
        }
        let upper = v.to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
        match full.parse::<Capability>() {
            Ok(c) => {
                caps.insert(c);
            }
            Err(_) => bail_hint!("use a name from capabilities(7), e.g. CAP_NET_RAW or net_raw, or `all`", "unknown capability {v:?}"),
        }
    }
    Ok(CapDrop { caps })
}

impl CapDrop {
    /// Drops the capabilities from every set (bounding first, so they cannot come back).
    pub fn apply(&self) -> Result<(), caps::errors::CapsError> {
        for c in &self.caps {
            if caps::has_cap(None, CapSet::Bounding, *c).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, *c)?;
            }
        }
        for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
            let mut have = caps::read(None, set)?;
            have.retain(|c| !self.caps.contains(c));
            caps::set(None, set, &have)?;
        }
        Ok(())
    }
}

/// The user the command runs as (`--user UID[:GID]`, `--group GID`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    #[serde(default)]
    pub groups: Vec<u32>,
}

impl User {
    /// Becomes the user: supplementary groups, group, user. A user other
    /// than root keeps no capability (the kernel clears them at setuid;
    /// checked, so a user never holds one it did not ask for).
    pub fn apply(&self) -> std::result::Result<(), String> {
        let gids: Vec<nix::unistd::Gid> = self.groups.iter().map(|g| nix::unistd::Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&gids).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setresgid(self.gid.into(), self.gid.into(), self.gid.into()).map_err(|e| format!("setgid {}: {e}", self.gid))?;
        nix::unistd::setresuid(self.uid.into(), self.uid.into(), self.uid.into()).map_err(|e| format!("setuid {}: {e}", self.uid))?;
        if self.uid != 0 {
            for set in [CapSet::Effective, CapSet::Permitted, CapSet::Ambient] {
                let left = caps::read(None, set).map_err(|e| format!("reading capabilities: {e}"))?;
                if !left.is_empty() {
                    return Err(format!("user {} would keep capabilities it did not ask for ({left:?})", self.uid));
                }
            }
        }
        Ok(())
    }
}

/// Parses `--user UID[:GID]` (numbers, or names in `passwd`/`group` files of
/// the workload's root) and `--group GID` values. Without GID: the user's
/// own group, or GID = UID for a number the root does not know.
pub fn parse_user(user: &str, groups: &[String], etc: &Path) -> Result<User> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
    let lookup = |text: &str, name: &str, field: usize| -> Option<u32> {
        text.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.first() == Some(&name)).and_then(|f| f.get(field)?.parse().ok())
    };
    let bad = |what: &str, v: &str| Error::invalid(format!("unknown {what} {v:?}"), format!("give a number, or a name in {}", etc.display()));
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => lookup(&passwd, u, 2).ok_or_else(|| bad("user", u))?,
    };
    let gid_of = |v: &str| -> Result<u32> { v.parse::<u32>().or_else(|_| lookup(&group, v, 2).ok_or_else(|| bad("group", v))) };
    let gid = match g {
        Some(g) => gid_of(g)?,
        None => passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.get(2).and_then(|x| x.parse::<u32>().ok()) == Some(uid)).and_then(|f| f.get(3)?.parse().ok()).unwrap_or(uid),
    };
    let groups = groups.iter().map(|g| gid_of(g)).collect::<Result<Vec<_>>>()?;
    if uid == u32::MAX || gid == u32::MAX {
        return Err(Error::invalid("uid and gid 4294967295 are not valid", "give another user"));
    }
    Ok(User { uid, gid, groups })
}

/// Compiles a seccompiler JSON file for this architecture and picks the
/// filter named "main", or the only one.
pub fn compile_seccomp(path: &Path) -> Result<BpfProgram> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open seccomp file {}", path.display()))?;
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|_| Error::msg(format!("seccomp: unsupported architecture {}", std::env::consts::ARCH)))?;
    let mut map = match seccompiler::compile_from_json(file, arch) {
        Ok(m) => m,
        Err(e) => bail_hint!(
            "the file must be seccompiler JSON: {\"main\": {\"mismatch_action\": \"allow\", \"match_action\": {\"errno\": 1}, \"filter\": [{\"syscall\": \"mkdir\"}]}}",
            "invalid seccomp filter {}: {e}",
            path.display()
        ),
    };
    if let Some(p) = map.remove("main") {
        return Ok(p);
    }
    if map.len() == 1 {
        if let Some((_, p)) = map.into_iter().next() {
            return Ok(p);
        }
    }
    bail_hint!("name the filter \"main\"", "seccomp file {} must hold one filter or one named \"main\"", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse_from_numbers_and_names() {
        let d = tempfile::tempdir().expect("dir");
        std::fs::write(d.path().join("passwd"), "root:x:0:0::/root:/bin/sh\nweb:x:1001:1002::/srv:/bin/sh\n").expect("passwd");
        std::fs::write(d.path().join("group"), "root:x:0:\nweb:x:1002:\nlog:x:4:\n").expect("group");
        assert_eq!(parse_user("1000", &[], d.path()).expect("uid"), User { uid: 1000, gid: 1000, groups: vec![] });
        assert_eq!(parse_user("web", &["log".into(), "7".into()], d.path()).expect("name"), User { uid: 1001, gid: 1002, groups: vec![4, 7] });
        assert_eq!(parse_user("1001:0", &[], d.path()).expect("pair"), User { uid: 1001, gid: 0, groups: vec![] });
        assert!(parse_user("nobody-here", &[], d.path()).is_err());
        assert!(parse_user("1:nogroup-here", &[], d.path()).is_err());
    }

    #[test]
    fn cap_names() {
        let d = parse_cap_drop(&["net_raw".into(), "CAP_SYS_ADMIN".into()]).expect("caps");
        assert!(d.caps.contains(&Capability::CAP_NET_RAW));
        assert!(d.caps.contains(&Capability::CAP_SYS_ADMIN));
        assert_eq!(parse_cap_drop(&["all".into()]).expect("all").caps.len(), caps::all().len());
        assert!(parse_cap_drop(&["bogus".into()]).is_err());
    }

    #[test]
    fn seccomp_json() {
        let dir = tempfile::tempdir().expect("tmp");
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"main":{"mismatch_action":"allow","match_action":{"errno":1},"filter":[{"syscall":"mkdir"}]}}"#,
        )
        .expect("write");
        assert!(!compile_seccomp(&good).expect("compile").is_empty());
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{ not json").expect("write");
        assert!(compile_seccomp(&bad).is_err());
    }
}
