//! `cns run`.

use cns_runtime::Runtime;
use cns_runtime::ops::{self, RunOptions};

use crate::cli::RunArgs;

pub fn run(rt: &Runtime, a: RunArgs) -> anyhow::Result<i32> {
    let opts = RunOptions {
        name: a.name,
        command: a.command,
        env: a.env,
        cwd: a.cwd,
        hostname: a.hostname,
        cap_drop: a.cap_drop,
        seccomp: a.seccomp,
        net: a.net.0,
        ip: a.ip,
        publish: a.publish.publish,
        detach: a.start.detach,
        pidfile: a.start.pidfile,
        no_outbound: a.no_outbound,
        confine: cns_runtime::confine::ConfineOptions { rootfs: a.rootfs, binds: a.binds, tmpfs: a.tmpfs, read_only: a.read_only, user: a.user, groups: a.groups, memory: a.memory, pids: a.pids, cpus: a.cpus },
    };
    let started = ops::run(rt, &opts)?;
    if opts.detach {
        println!("{}", started.name);
        return Ok(0);
    }
    Ok(ops::wait_foreground(rt, &started.name, started.pid, &started.log, 0, &mut std::io::stdout()))
}
