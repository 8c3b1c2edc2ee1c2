//! `cns completions` and the hidden `cns __man DIR`.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

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
