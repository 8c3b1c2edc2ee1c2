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
    Ok(())
}
