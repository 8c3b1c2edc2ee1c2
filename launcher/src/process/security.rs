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
        if self.caps.is_empty() {
            // Nothing to drop: no capget/capset round trips before exec.
            return Ok(());
        }
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
