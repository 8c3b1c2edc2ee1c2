//! `cns inspect`, `cns completions`, and man page generation.

use clap::CommandFactory;

use crate::Ctx;
use crate::cli::{Cli, CompletionsArgs, InspectArgs, ManArgs};

pub fn inspect(ctx: &Ctx, args: InspectArgs) -> anyhow::Result<i32> {
    let w = ctx.store.get(&args.name)?;
    let mut v = serde_json::to_value(&w)?;
    v["state"] = serde_json::to_value(w.live_state())?;
    if let Some(dir) = &w.images {
        let img = cns_engine::ImageDir::new(dir);
        if let Ok(meta) = crate::checkpoint::read_meta(dir) {
            v["checkpoint"] = serde_json::json!({
                "dir": dir,
                "criu_version": meta.criu_version,
                "kernel": meta.kernel,
                "dumped_at": meta.dumped_at,
                "stats": meta.stats,
                "image_bytes": img.image_bytes().ok(),
                "page_bytes": img.page_bytes().ok(),
                "tree": img.tree().ok(),
                "files": img.file_kinds().ok(),
            });
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(0)
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<i32> {
    let shell = match args.shell.as_str() {
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        _ => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "cns", &mut std::io::stdout());
    Ok(0)
}

/// Writes cns.1 and cns-<sub>.1 from the clap definitions.
pub fn man(args: ManArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&args.dir)?;
    let cmd = Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(args.dir.join("cns.1"), &buf)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("cns-{}", sub.get_name());
        let sub = sub.clone().name(clap::builder::Str::from(name.clone().leak() as &str));
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).render(&mut buf)?;
        std::fs::write(args.dir.join(format!("{name}.1")), &buf)?;
    }
    Ok(0)
}
