//! cns: the command line over the cns runtime library. Parsing (clap),
//! rendering (text and `--json`), progress on a terminal, exit codes;
//! everything else is in `cns_runtime`.

mod cli;

use clap::Parser;
use cns_runtime::Runtime;

use crate::cli::{Cli, Command};

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let level = match (quiet, verbose) {
        (true, _) => LevelFilter::ERROR,
        (_, 0) => LevelFilter::WARN,
        (_, 1) => LevelFilter::INFO,
        (_, 2) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).without_time();
    // RUST_LOG takes the full directive syntax (EnvFilter). Without it, a
    // fixed level and target list: EnvFilter compiles its directive
    // matchers at start-up, most of a millisecond of every command.
    // An unusable RUST_LOG falls back to the fixed filter, as before.
    let env = std::env::var_os("RUST_LOG").and_then(|_| tracing_subscriber::EnvFilter::try_from_default_env().ok());
    let _ = match env {
        Some(filter) => tracing_subscriber::registry().with(fmt.with_filter(filter)).try_init(),
        None => {
            let filter = Targets::new().with_default(level).with_target("netlink", LevelFilter::WARN);
            tracing_subscriber::registry().with(fmt.with_filter(filter)).try_init()
        }
    };
}

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Completions(a) => return cli::completions::completions(a),
        Command::Man(a) => return cli::completions::man(a),
        // Keys are files of their owner's: no root, no state.
        Command::Key(c) => return cli::key::key(c, quiet),
        _ => {}
    }
    let rt = Runtime::from_env(cli.criu)?;
    // Every command that reads or changes workloads needs root: the state
    // is root-only, and half an answer (an empty `ps`) would mislead.
    rt.require_root()?;
    rt.store.prepare();
    cns_runtime::recovery::sweep(&rt);
    match cli.command {
        Command::Run(a) => cli::run::run(&rt, *a),
        Command::Ps(a) => cli::ps::ps(&rt, a),
        Command::Exec(a) => cli::exec::exec(&rt, a),
        Command::Logs(a) => cli::logs::logs(&rt, a),
        Command::Kill(a) => cli::kill::kill(&rt, a),
        Command::Rm(a) => cli::rm::rm(&rt, a),
        Command::Dump(a) => cli::dump::dump(&rt, a, quiet),
        Command::Restore(a) => cli::restore::restore(&rt, a, quiet),
        Command::Check(a) => cli::check::check(&rt, a),
        Command::Inspect(a) => cli::inspect::inspect(&rt, a),
        Command::Export(a) => cli::export::export(&rt, a, quiet),
        Command::Import(a) => cli::import::import(&rt, a, quiet),
        Command::Migrate(a) => cli::migrate::migrate(&rt, a, quiet),
        Command::Receive => cli::migrate::receive(&rt),
        Command::Completions(_) | Command::Man(_) | Command::Key(_) => Ok(0),
    }
}

fn main() {
    // `cns ps | head`: a closed pipe ends cns quietly, as it does `ls`.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    // Images hold memory: nothing cns creates is readable by others.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => cli::render::report(&e),
    };
    std::process::exit(code);
}
