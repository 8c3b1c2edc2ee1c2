//! The command line. Subcommand names are explicit and `--help` is
//! snapshot-tested, so a rename is always deliberate. Options that several
//! commands take are declared once, as argument groups, below.

pub mod check;
pub mod completions;
pub mod dump;
pub mod exec;
pub mod export;
pub mod import;
pub mod inspect;
pub mod key;
pub mod kill;
pub mod logs;
pub mod migrate;
pub mod ps;
pub mod render;
pub mod restore;
pub mod rm;
pub mod run;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `-d` and `--pidfile`: run and restore.
#[derive(Debug, Args, Clone)]
pub struct StartArgs {
    /// Detach: start in the background and print the name
    #[arg(short, long)]
    pub detach: bool,
    /// Write the host PID of the workload's root process to FILE
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
}

/// `-p`: run and restore.
#[derive(Debug, Args, Clone)]
pub struct PublishArg {
    /// Publish a port: [HOSTIP:]HOSTPORT:PORT (TCP, forwarded to the workload; all host
    /// addresses without HOSTIP; at most 256 connections at once; at restore, instead of the
    /// checkpoint's own; repeatable)
    #[arg(short = 'p', long = "publish", value_name = "[IP:]PORT:PORT")]
    pub publish: Vec<String>,
}

/// `--action-script`: dump and restore.
#[derive(Debug, Args, Clone)]
pub struct HooksArg {
    /// Run SCRIPT at each of CRIU's stages, the stage in $CRTOOLS_SCRIPT_ACTION (as CRIU's
    /// --action-script; a failing script fails the operation; repeatable)
    #[arg(long = "action-script", value_name = "SCRIPT")]
    pub action_scripts: Vec<PathBuf>,
}

/// `--images`: dump and restore.
#[derive(Debug, Args, Clone)]
pub struct ImagesArg {
    /// Image directory (default /var/lib/cns/images/NAME)
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
}

/// `--no-preflight`: dump and restore.
#[derive(Debug, Args, Clone)]
pub struct PreflightArg {
    /// Skip the pre-flight check
    #[arg(long)]
    pub no_preflight: bool,
}

/// `--print-criu-cmdline`: dump and restore.
#[derive(Debug, Args, Clone)]
pub struct CmdlineArg {
    /// Print the equivalent plain `criu` command line and exit (changes nothing)
    #[arg(long)]
    pub print_criu_cmdline: bool,
}

/// `--json`: every command with machine-readable output.
#[derive(Debug, Args, Clone)]
pub struct JsonArg {
    /// Print JSON (field names are stable: docs/json.md)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Parser)]
#[command(
    name = "cns",
    version,
    about = "Run Linux workloads in fresh namespaces so CRIU can checkpoint them at any moment",
    long_about = "cns starts a command in fresh pid, mount, network, uts, ipc and time namespaces, \
set up so that CRIU can dump it at any moment, and dumps and restores it (into new namespaces, \
so restored PIDs never clash).",
    propagate_version = true
)]
pub struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// CRIU binary to use (default: $CNS_CRIU, then PATH)
    #[arg(long, global = true, value_name = "PATH")]
    pub criu: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a command in fresh namespaces
    Run(Box<RunArgs>),
    /// List workloads
    Ps(PsArgs),
    /// Run a command inside a running workload's namespaces
    Exec(ExecArgs),
    /// Show a workload's output
    Logs(LogsArgs),
    /// Send a signal to a workload
    Kill(KillArgs),
    /// Stop a workload and remove its state
    Rm(RmArgs),
    /// Checkpoint a workload (or a host process tree with --pid) with CRIU
    Dump(DumpArgs),
    /// Restore a checkpoint into new namespaces
    Restore(RestoreArgs),
    /// Check that this machine can checkpoint, or pre-flight a workload or image
    Check(CheckArgs),
    /// Show everything about a workload or checkpoint
    Inspect(InspectArgs),
    /// Write a workload's checkpoint into one portable archive
    Export(ExportArgs),
    /// Unpack a checkpoint archive (from `cns export`) for `cns restore`
    Import(ImportArgs),
    /// Move a running workload to another host over ssh
    Migrate(MigrateArgs),
    /// The destination side of `cns migrate` (started by it through ssh)
    #[command(hide = true)]
    Receive,
    /// Make and manage signing keys (minisign's format)
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print shell completions
    Completions(CompletionsArgs),
    /// Write man pages into a directory
    #[command(name = "__man", hide = true)]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The workload to move
    pub name: String,
    /// Where: [user@]host[:port] (an ssh destination whose cns runs `cns receive`)
    pub dest: String,
    /// The ssh command, with its options (split on spaces)
    #[arg(long, default_value = "ssh", value_name = "CMD")]
    pub ssh: String,
    /// The cns to run on the destination
    #[arg(long, default_value = "cns", value_name = "PATH")]
    pub remote_cns: String,
    /// Iterative pre-dumps while the workload runs, then the final dump (needs the
    /// kernel's soft-dirty tracking; refused where it is missing)
    #[arg(long)]
    pub precopy: bool,
    /// Post-copy: resume on the destination at once and move the memory on demand
    /// (needs fs.pipe-max-size of at least 4 MiB on both hosts)
    #[arg(long)]
    pub lazy: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workload name (default: generated)
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub start: StartArgs,
    /// Set an environment variable (repeatable)
    #[arg(short, long, value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory of the command
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Hostname inside the workload (default: the name)
    #[arg(long)]
    pub hostname: Option<String>,
    /// Drop a capability (e.g. CAP_NET_RAW or net_raw), or `all` (repeatable)
    #[arg(long, value_name = "CAP|all")]
    pub cap_drop: Vec<String>,
    /// Apply a seccomp filter (seccompiler JSON; the filter named "main", or the only one)
    #[arg(long, value_name = "FILE")]
    pub seccomp: Option<PathBuf>,
    /// Network: `veth` (a veth pair to the host, the default) or `none` (only lo)
    #[arg(long, default_value = "veth", value_name = "veth|none")]
    pub net: NetArg,
    /// The workload's address, A.B.C.D[/30|/31] (default: the next free /30 of the pool)
    #[arg(long, value_name = "CIDR")]
    pub ip: Option<String>,
    #[command(flatten)]
    pub publish: PublishArg,
    /// Root file system: the workload sees DIR as / (an overlay: DIR itself is never
    /// written; the workload's changes are its own and go into its checkpoints), with a
    /// fresh /proc and a minimal /dev; the host's tree is detached with pivot_root
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Bind-mount the host's SRC at DST inside, read-only with :ro (repeatable)
    #[arg(long = "bind", value_name = "SRC:DST[:ro]")]
    pub binds: Vec<String>,
    /// Mount an empty tmpfs at DST, at most SIZE (e.g. 64m) (repeatable)
    #[arg(long, value_name = "DST[:SIZE]")]
    pub tmpfs: Vec<String>,
    /// Make the root (the host's, or --rootfs) and every mount under it read-only, except
    /// /proc, /dev and the --bind/--tmpfs mounts asked for
    #[arg(long)]
    pub read_only: bool,
    /// Keep the workload from reaching past the host: no NAT, and what it sends beyond
    /// the host is dropped (by default a veth workload reaches the host's networks and the
    /// world through NAT)
    #[arg(long)]
    pub no_outbound: bool,
    /// Run the command as UID[:GID] (numbers, or names in the root's /etc/passwd and
    /// /etc/group); a user other than root keeps no capability
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// A supplementary group of --user (repeatable)
    #[arg(long = "group", value_name = "GID")]
    pub groups: Vec<String>,
    /// Memory limit (e.g. 512m, 2g), enforced by a cgroup of the workload's own
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Limit on the number of tasks (processes and threads)
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// CPU time limit in CPUs (e.g. 0.5)
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    /// Command and its arguments
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub name: String,
    /// Set an environment variable (repeatable)
    #[arg(short, long, value_name = "K=V")]
    pub env: Vec<String>,
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep following the log until the workload exits
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Workloads to signal (a last word that is a signal, as in `cns kill web USR1`, is the signal)
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Signal name or number (default TERM)
    #[arg(short, long, value_name = "SIGNAL")]
    pub signal: Option<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Workloads to remove
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Stop it first if it is running
    #[arg(short, long)]
    pub force: bool,
    /// Keep its checkpoint images
    #[arg(long)]
    pub keep_images: bool,
}

/// CRIU's switches, by CRIU's names: dump and restore.
#[derive(Debug, Args, Clone)]
pub struct CriuFlags {
    /// Checkpoint/restore established TCP connections
    #[arg(long)]
    pub tcp_established: bool,
    /// Checkpoint/restore file locks
    #[arg(long)]
    pub file_locks: bool,
    /// Allow unix sockets connected outside the tree
    #[arg(long)]
    pub ext_unix_sk: bool,
    /// The tree is a shell job (uses a terminal of a process outside it)
    #[arg(long)]
    pub shell_job: bool,
    /// Checkpoint/restore files unlinked while open but linked elsewhere
    #[arg(long)]
    pub link_remap: bool,
    /// Reopen devices by any path to the same node when the original is gone
    #[arg(long)]
    pub evasive_devices: bool,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Workload name (with --pid: the name to give the checkpoint)
    pub name: String,
    /// Adopt a host process tree that cns did not start: its root PID
    #[arg(long, value_name = "PID")]
    pub pid: Option<i32>,
    /// Keep the workload running after the dump
    #[arg(long)]
    pub leave_running: bool,
    /// Drop connections still waiting in a listen queue (clients reconnect)
    #[arg(long)]
    pub tcp_skip_in_flight: bool,
    #[command(flatten)]
    pub images: ImagesArg,
    #[command(flatten)]
    pub criu: CriuFlags,
    #[command(flatten)]
    pub hooks: HooksArg,
    #[command(flatten)]
    pub preflight: PreflightArg,
    #[command(flatten)]
    pub cmdline: CmdlineArg,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Checkpoint name (or with --images, the image's name)
    pub name: String,
    /// Restore a copy under a new name (the image is kept)
    #[arg(long = "as", value_name = "NEW")]
    pub as_name: Option<String>,
    #[command(flatten)]
    pub start: StartArgs,
    #[command(flatten)]
    pub images: ImagesArg,
    #[command(flatten)]
    pub criu: CriuFlags,
    #[command(flatten)]
    pub hooks: HooksArg,
    /// Post-copy: run at once, memory served on demand by CRIU's lazy-pages daemon
    /// (needs fs.pipe-max-size >= 4 MiB and userfaultfd)
    #[arg(long)]
    pub lazy: bool,
    /// No outbound access for the restored workload (see `cns run --no-outbound`)
    #[arg(long)]
    pub no_outbound: bool,
    /// Where the checkpoint's root directory (its --rootfs) is on this host now
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// A new host source for the checkpoint's bind mount on DST (repeatable; needed for
    /// each bind of an imported checkpoint)
    #[arg(long = "bind", value_name = "SRC:DST")]
    pub binds: Vec<String>,
    /// Keep the dumped inner address for a copy (default: a fresh one for --as)
    #[arg(long)]
    pub keep_ip: bool,
    #[command(flatten)]
    pub publish: PublishArg,
    /// Give an in-place restore a fresh address (its TCP connections are
    /// lost), e.g. when the checkpoint's address is taken on this machine
    #[arg(long, conflicts_with = "keep_ip")]
    pub new_ip: bool,
    #[command(flatten)]
    pub preflight: PreflightArg,
    /// Memory the restore may use, in MiB, for the pre-flight (default:
    /// MemAvailable and the memory cgroup's limit)
    #[arg(long, value_name = "MIB")]
    pub memory_limit: Option<u64>,
    #[command(flatten)]
    pub cmdline: CmdlineArg,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A running workload to pre-flight before a dump
    pub name: Option<String>,
    /// Pre-flight a checkpoint (name or image directory) before a restore
    #[arg(long, value_name = "NAME|DIR", conflicts_with = "name")]
    pub image: Option<String>,
    /// Memory the restore may use, in MiB (default: MemAvailable)
    #[arg(long, value_name = "MIB")]
    pub memory_limit: Option<u64>,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Workload name, a checkpoint directory (any path with a '/'), or an archive file
    #[arg(value_name = "NAME|DIR")]
    pub name: String,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Workload whose last checkpoint to export
    pub name: String,
    /// The archive to write
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Compression of the archive
    #[arg(long, default_value = "zstd", value_name = "none|gzip|zstd")]
    pub compress: CompressArg,
    /// Sign the archive's manifest with this secret key (from `cns key generate`)
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An archive written by `cns export`
    pub file: PathBuf,
    /// Name to give the imported checkpoint (default: its own)
    #[arg(long = "as", value_name = "NAME")]
    pub as_name: Option<String>,
    /// Refuse archives that unpack to more than this many MiB
    #[arg(long, default_value_t = 65536, value_name = "MIB")]
    pub max_size: u64,
    /// Also trust signatures by this public key (besides /etc/cns/trusted.d/*.pub; repeatable)
    #[arg(long, value_name = "PUB")]
    pub trust: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new key pair: the secret key at PATH (0600), the public key at PATH.pub
    Generate(KeyGenerateArgs),
}

#[derive(Debug, Args)]
pub struct KeyGenerateArgs {
    /// Where the secret key goes (never over an existing file)
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    pub dir: PathBuf,
}

impl From<&CriuFlags> for cns_engine::CriuFlags {
    fn from(f: &CriuFlags) -> cns_engine::CriuFlags {
        cns_engine::CriuFlags {
            tcp_established: f.tcp_established,
            file_locks: f.file_locks,
            ext_unix_sk: f.ext_unix_sk,
            shell_job: f.shell_job,
            link_remap: f.link_remap,
            evasive_devices: f.evasive_devices,
        }
    }
}

/// `--net`, parsed by the library.
#[derive(Debug, Clone, Copy)]
pub struct NetArg(pub cns_runtime::workload::NetMode);

impl std::str::FromStr for NetArg {
    type Err = String;
    fn from_str(s: &str) -> Result<NetArg, String> {
        s.parse().map(NetArg).map_err(|e: cns_runtime::Error| e.to_string())
    }
}

/// `--compress`.
#[derive(Debug, Clone, Copy)]
pub struct CompressArg(pub cns_runtime::ops::Compression);

impl std::str::FromStr for CompressArg {
    type Err = String;
    fn from_str(s: &str) -> Result<CompressArg, String> {
        s.parse().map(CompressArg)
    }
}
