//! The `keelson` binary.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use keelson::store::{Store, StoreConfig};
use std::path::{Path, PathBuf};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "keelson", version, about = "A Kubernetes-compatible control plane built for speed")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a consistent copy of a (stopped or running) store's data to a new directory.
    Backup {
        #[arg(long, default_value = "./keelson-data")]
        data_dir: PathBuf,
        #[arg(long)]
        to: PathBuf,
    },
    /// Creates a data directory from a backup.
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long, default_value = "./keelson-data")]
        data_dir: PathBuf,
    },
    /// Prints a store's revisions and object count.
    Inspect {
        #[arg(long, default_value = "./keelson-data")]
        data_dir: PathBuf,
    },
}

fn open(data_dir: &Path) -> Result<std::sync::Arc<Store>> {
    Store::open(data_dir, StoreConfig::default())
        .with_context(|| format!("opening the store in {}", data_dir.display()))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Backup { data_dir, to } => {
            let revision = open(&data_dir)?.backup(&to)?;
            println!("backed up {} at revision {revision} to {}", data_dir.display(), to.display());
        }
        Command::Restore { from, data_dir } => {
            Store::restore(&from, &data_dir)?;
            println!("restored {} into {}", from.display(), data_dir.display());
        }
        Command::Inspect { data_dir } => {
            let store = open(&data_dir)?;
            let stats = store.stats();
            println!("current revision   {}", stats.current_revision);
            println!("compacted revision {}", stats.compacted_revision);
            println!("objects            {}", store.count(b"/registry/")?);
        }
    }
    Ok(())
}
