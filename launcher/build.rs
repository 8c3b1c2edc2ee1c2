//! Builds cns-init-static (init/init.c): the PID 1 of workloads with a root
//! file system of their own, linked statically so it runs in any root. The
//! bytes are embedded in the library (process/spawn.rs installs them).
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=init/init.c");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("cns-init-static");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-static", "-Os", "-s", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg("init/init.c")
        .status()
        .map_err(|e| format!("cannot run {cc} to build init/init.c: {e} (install gcc and libc6-dev)"))?;
    if !status.success() {
        return Err(format!("{cc} failed to build init/init.c statically ({status}): libc6-dev provides libc.a").into());
    }
    // Its installed name carries a hash of its bytes, computed here once
    // instead of at every `cns run` (about a millisecond for 680 KB).
    use blake2::Digest;
    let hash = blake2::Blake2b512::digest(std::fs::read(&out)?);
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(out.with_file_name("cns-init-static.name"), format!("cns-init-static-{hex}"))?;
    Ok(())
}
