//! `cns key generate PATH`.

use crate::cli::KeyCommand;

pub fn key(cmd: KeyCommand, quiet: bool) -> anyhow::Result<i32> {
    match cmd {
        KeyCommand::Generate(a) => {
            let public = cns_runtime::ops::generate_key(&a.path)?;
            if !quiet {
                println!("key {} : secret key {} (keep it private), public key {}.pub (give it to the hosts that import)", public.id(), a.path.display(), a.path.display());
            }
            Ok(0)
        }
    }
}
