//! The user a workload's command runs as (`--user`, `--group`): parsed in
//! the parent, applied in the child after the capabilities are dropped.

use std::path::Path;

use caps::CapSet;

use crate::error::{Error, Result};

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
}
