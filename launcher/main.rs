//! cns: run Linux workloads in fresh namespaces, checkpointable from birth.

mod checkpoint;
mod cli;
mod error;
mod extras;
mod lifecycle;
mod monitor;
mod network;
mod paths;
mod portable;
mod publish;
mod recovery;
mod run;
mod security;
mod spawn;
mod store;
mod syscheck;

use std::path::PathBuf;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::paths::{Config, Paths};
use crate::store::Store;

/// What every command gets.
#[derive(Debug)]
pub struct Ctx {
    pub store: Store,
    pub config: Config,
    pub criu_path: Option<PathBuf>,
    pub quiet: bool,
}

impl Ctx {
    /// Refuses non-root callers with one clear line.
    pub fn require_root(&self) -> anyhow::Result<()> {
        if !nix::unistd::geteuid().is_root() {
            bail_hint!("run it as root, e.g. with sudo", "cns needs root to create namespaces and run CRIU");
        }
        Ok(())
    }

    /// The CRIU to use.
    pub fn criu(&self) -> anyhow::Result<cns_engine::Criu> {
        let cache = self.store.paths.state.join(".criu-version");
        if crate::store::mkdir_private(&self.store.paths.state).is_ok() {
            return Ok(cns_engine::Criu::locate_cached(self.criu_path.as_deref(), &cache)?);
        }
        Ok(cns_engine::Criu::locate(self.criu_path.as_deref())?)
    }

    /// The image directory root.
    pub fn images_root(&self) -> PathBuf {
        self.config.images_dir.clone().unwrap_or_else(|| self.store.paths.images_root())
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        (_, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("{level},netlink=warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

fn dispatch(ctx: &Ctx, command: Command) -> anyhow::Result<i32> {
    let touches_store = !matches!(command, Command::Completions(_) | Command::Man(_));
    if touches_store {
        // Every command that reads or changes workloads needs root: the state
        // is root-only, and half an answer (an empty `ps`) would mislead.
        ctx.require_root()?;
        recovery::sweep(ctx);
    }
    match command {
        Command::Run(a) => run::run(ctx, a),
        Command::Ps(a) => lifecycle::ps(ctx, a),
        Command::Exec(a) => lifecycle::exec(ctx, a),
        Command::Logs(a) => lifecycle::logs(ctx, a),
        Command::Kill(a) => lifecycle::kill(ctx, a),
        Command::Rm(a) => lifecycle::rm(ctx, a),
        Command::Dump(a) => checkpoint::dump(ctx, a),
        Command::Restore(a) => checkpoint::restore(ctx, a),
        Command::Check(a) => syscheck::check(ctx, a),
        Command::Inspect(a) => extras::inspect(ctx, a),
        Command::Export(a) => portable::export(ctx, a),
        Command::Import(a) => portable::import(ctx, a),
        Command::Completions(a) => extras::completions(a),
        Command::Man(a) => extras::man(a),
    }
}

fn main() {
    // The workload's PID 1 (see spawn.rs): nothing else runs in it, so it
    // holds no fd and maps nothing but this binary.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "__init") {
        let pid = args.next().and_then(|p| p.to_str()?.parse::<i32>().ok()).unwrap_or(0);
        if pid > 0 {
            std::process::exit(spawn::init_loop(nix::unistd::Pid::from_raw(pid)));
        }
        std::process::exit(error::EXIT_CNS);
    }
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    // Images hold memory: nothing cns creates is readable by others.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let code = match Config::load() {
        Err(e) => report(&e),
        Ok(config) => {
            let ctx = Ctx { store: Store::new(Paths::from_env()), config, criu_path: cli.criu.clone(), quiet: cli.quiet };
            match dispatch(&ctx, cli.command) {
                Ok(code) => code,
                Err(e) => report(&e),
            }
        }
    };
    std::process::exit(code);
}

fn report(e: &anyhow::Error) -> i32 {
    let (msg, hint) = error::render(e);
    eprintln!("cns: {msg}");
    if let Some(h) = hint {
        eprintln!("hint: {h}");
    }
    error::status_of(e)
}
