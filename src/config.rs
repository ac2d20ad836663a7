//! Command line and configuration file.
//!
//! Every setting has a default, can be given in a TOML file (`--config FILE`) and can be
//! overridden by a flag; the flag wins over the file, the file over the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::byte_size::ByteSize;
use crate::duration_arg::DurationArg;

pub const DEFAULT_DATA_DIR: &str = "./regiondb-data";
pub const DEFAULT_PG_LISTEN: &str = "127.0.0.1:5433";
pub const DEFAULT_SCHEDULER_LISTEN: &str = "127.0.0.1:2379";
pub const DEFAULT_SCHEDULER_DATA_DIR: &str = "./regiondb-scheduler";
pub const DEFAULT_NODE_LISTEN: &str = "127.0.0.1:20160";
pub const DEFAULT_NODE_DATA_DIR: &str = "./regiondb-node";

#[derive(Parser, Debug)]
#[command(
    name = "regiondb",
    version,
    about = "RegionDB: a distributed SQL database speaking PostgreSQL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub single: SingleArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a scheduler (timestamp oracle, IDs, cluster metadata) for a multi-node cluster.
    Scheduler(SchedulerArgs),
    /// Run a node (a store and a SQL gateway) that joins a cluster through its scheduler.
    Node(NodeArgs),
}

/// The default mode: a whole single-node cluster in one process.
#[derive(Args, Debug, Default)]
pub struct SingleArgs {
    /// Directory for all data (created if missing) [default: ./regiondb-data]
    #[arg(long, global = false)]
    pub data_dir: Option<PathBuf>,
    /// Address for PostgreSQL clients [default: 127.0.0.1:5433]
    #[arg(long)]
    pub pg_listen: Option<SocketAddr>,
    /// TOML file with settings (keys: data_dir, pg_listen, region_split_size,
    /// region_max_size, max_merge_region_size, max_merge_region_keys, split_merge_interval,
    /// txn_mode)
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub regions: RegionArgs,
    #[command(flatten)]
    pub merge: MergeArgs,
    #[command(flatten)]
    pub sql: SqlArgs,
}

/// How SQL sessions run (single node and cluster nodes).
#[derive(Args, Debug, Default, Clone)]
pub struct SqlArgs {
    /// How transactions meet other writers unless a session sets regiondb_txn_mode:
    /// pessimistic (writers lock rows and wait, as PostgreSQL) or optimistic (the second
    /// committer of a row fails with 40001) [default: pessimistic]
    #[arg(long, value_enum)]
    pub txn_mode: Option<TxnModeArg>,
}

#[derive(clap::ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TxnModeArg {
    Pessimistic,
    Optimistic,
}

impl SqlArgs {
    fn resolve(&self, file: &FileConfig) -> kv::TxnMode {
        match self.txn_mode.or(file.txn_mode) {
            Some(TxnModeArg::Optimistic) => kv::TxnMode::Optimistic,
            Some(TxnModeArg::Pessimistic) | None => kv::TxnMode::Pessimistic,
        }
    }
}

/// When small regions merge (the scheduler's merge checker; single node and scheduler).
#[derive(Args, Debug, Default, Clone)]
pub struct MergeArgs {
    /// A region of at most this size merges into a neighbour, e.g. 20MiB; 0 turns merging
    /// off [default: 20MiB]
    #[arg(long)]
    pub max_merge_region_size: Option<ByteSize>,
    /// … and of at most this many keys [default: 200000]
    #[arg(long)]
    pub max_merge_region_keys: Option<u64>,
    /// How long a region must exist (as the scheduler knows it) before it may merge, e.g.
    /// 1h or 0s [default: 1h]
    #[arg(long)]
    pub split_merge_interval: Option<DurationArg>,
}

/// The resolved merge settings (`None`: the scheduler's default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergeSettings {
    pub max_size: Option<u64>,
    pub max_keys: Option<u64>,
    pub split_merge_interval: Option<std::time::Duration>,
}

impl MergeSettings {
    fn resolve(args: &MergeArgs, file: &FileConfig) -> MergeSettings {
        MergeSettings {
            max_size: args
                .max_merge_region_size
                .or(file.max_merge_region_size)
                .map(|s| s.0),
            max_keys: args.max_merge_region_keys.or(file.max_merge_region_keys),
            split_merge_interval: args
                .split_merge_interval
                .or(file.split_merge_interval)
                .map(|d| d.0),
        }
    }

    /// These settings over `config`.
    pub fn apply(&self, config: &mut scheduler::MergeConfig) {
        if let Some(size) = self.max_size {
            config.max_size = size;
            config.max_target_size = config.max_target_size.max(size.saturating_mul(3));
        }
        if let Some(keys) = self.max_keys {
            config.max_keys = keys;
        }
        if let Some(interval) = self.split_merge_interval {
            config.split_merge_interval = interval;
        }
    }
}

/// When regions split (single node and cluster nodes).
#[derive(Args, Debug, Default, Clone)]
pub struct RegionArgs {
    /// Size of the part cut off a region that grew past --region-max-size, e.g. 96MiB
    /// [default: 96MiB]
    #[arg(long)]
    pub region_split_size: Option<ByteSize>,
    /// A region larger than this is split, e.g. 144MiB [default: 144MiB]
    #[arg(long)]
    pub region_max_size: Option<ByteSize>,
}

pub const DEFAULT_REGION_SPLIT_SIZE: ByteSize = ByteSize(96 << 20);
pub const DEFAULT_REGION_MAX_SIZE: ByteSize = ByteSize(144 << 20);

/// The resolved split sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionSizes {
    pub split_size: ByteSize,
    pub max_size: ByteSize,
}

impl RegionSizes {
    /// Flags over the file over the defaults. Given only one of the two sizes, the other
    /// keeps the default ratio (max = 1.5 × split).
    fn resolve(args: &RegionArgs, file: &FileConfig) -> Result<RegionSizes, String> {
        let split = args.region_split_size.or(file.region_split_size);
        let max = args.region_max_size.or(file.region_max_size);
        let (split_size, max_size) = match (split, max) {
            (Some(split), Some(max)) => (split, max),
            (Some(split), None) => (split, ByteSize(split.0.saturating_add(split.0 / 2))),
            (None, Some(max)) => (ByteSize(max.0 / 3 * 2), max),
            (None, None) => (DEFAULT_REGION_SPLIT_SIZE, DEFAULT_REGION_MAX_SIZE),
        };
        if split_size.0 == 0 {
            return Err("region_split_size must be more than 0 bytes".into());
        }
        if max_size < split_size {
            return Err(format!(
                "region_max_size ({max_size}) must not be less than region_split_size \
                 ({split_size})"
            ));
        }
        Ok(RegionSizes {
            split_size,
            max_size,
        })
    }
}

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Address for gRPC from nodes and clients [default: 127.0.0.1:2379]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for the scheduler's state [default: ./regiondb-scheduler]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A store down for longer than this has its replicas rebuilt on other stores, e.g. 30s
    /// or 10m [default: 10m]
    #[arg(long)]
    pub max_store_down_time: Option<DurationArg>,
    /// TOML file with settings (keys: data_dir, listen, max_store_down_time,
    /// max_merge_region_size, max_merge_region_keys, split_merge_interval)
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub merge: MergeArgs,
}

#[derive(Args, Debug, Default)]
pub struct NodeArgs {
    /// The scheduler's gRPC address [default: 127.0.0.1:2379]
    #[arg(long)]
    pub scheduler: Option<SocketAddr>,
    /// Address for gRPC from other nodes (KV commands, raft messages) [default: 127.0.0.1:20160]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address for PostgreSQL clients [default: 127.0.0.1:5433]
    #[arg(long)]
    pub pg_listen: Option<SocketAddr>,
    /// Directory for the node's data (created if missing) [default: ./regiondb-node]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TOML file with settings (keys: scheduler, listen, pg_listen, data_dir,
    /// region_split_size, region_max_size, txn_mode)
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub regions: RegionArgs,
    #[command(flatten)]
    pub sql: SqlArgs,
}

/// Settings as they may appear in the TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub pg_listen: Option<SocketAddr>,
    pub listen: Option<SocketAddr>,
    pub scheduler: Option<SocketAddr>,
    pub region_split_size: Option<ByteSize>,
    pub region_max_size: Option<ByteSize>,
    pub max_store_down_time: Option<DurationArg>,
    pub max_merge_region_size: Option<ByteSize>,
    pub max_merge_region_keys: Option<u64>,
    pub split_merge_interval: Option<DurationArg>,
    pub txn_mode: Option<TxnModeArg>,
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> Result<FileConfig, String> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid config file {}: {e}", path.display()))
    }
}

/// The resolved settings of a single-node cluster.
#[derive(Debug, Clone)]
pub struct SingleNodeConfig {
    pub data_dir: PathBuf,
    pub pg_listen: SocketAddr,
    pub regions: RegionSizes,
    pub merge: MergeSettings,
    pub txn_mode: kv::TxnMode,
}

impl SingleNodeConfig {
    pub fn resolve(args: &SingleArgs) -> Result<SingleNodeConfig, String> {
        let file = FileConfig::load(args.config.as_deref())?;
        let default_pg: SocketAddr = DEFAULT_PG_LISTEN.parse().map_err(|e| format!("{e}"))?;
        let regions = RegionSizes::resolve(&args.regions, &file)?;
        let merge = MergeSettings::resolve(&args.merge, &file);
        let txn_mode = args.sql.resolve(&file);
        Ok(SingleNodeConfig {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            pg_listen: args.pg_listen.or(file.pg_listen).unwrap_or(default_pg),
            regions,
            merge,
            txn_mode,
        })
    }
}

/// The resolved settings of a scheduler process.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `None`: the scheduler's default.
    pub max_store_down_time: Option<std::time::Duration>,
    pub merge: MergeSettings,
}

impl SchedulerConfig {
    pub fn resolve(args: &SchedulerArgs) -> Result<SchedulerConfig, String> {
        let file = FileConfig::load(args.config.as_deref())?;
        let default_listen: SocketAddr = DEFAULT_SCHEDULER_LISTEN
            .parse()
            .map_err(|e| format!("{e}"))?;
        let merge = MergeSettings::resolve(&args.merge, &file);
        Ok(SchedulerConfig {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SCHEDULER_DATA_DIR)),
            listen: args.listen.or(file.listen).unwrap_or(default_listen),
            max_store_down_time: args
                .max_store_down_time
                .or(file.max_store_down_time)
                .map(|d| d.0),
            merge,
        })
    }
}

/// The resolved settings of a cluster node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub scheduler: SocketAddr,
    pub listen: SocketAddr,
    pub pg_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub regions: RegionSizes,
    pub txn_mode: kv::TxnMode,
}

impl NodeConfig {
    pub fn resolve(args: &NodeArgs) -> Result<NodeConfig, String> {
        let file = FileConfig::load(args.config.as_deref())?;
        let parse = |s: &str| s.parse::<SocketAddr>().map_err(|e| format!("{e}"));
        let regions = RegionSizes::resolve(&args.regions, &file)?;
        let txn_mode = args.sql.resolve(&file);
        Ok(NodeConfig {
            scheduler: match args.scheduler.or(file.scheduler) {
                Some(address) => address,
                None => parse(DEFAULT_SCHEDULER_LISTEN)?,
            },
            listen: match args.listen.or(file.listen) {
                Some(address) => address,
                None => parse(DEFAULT_NODE_LISTEN)?,
            },
            pg_listen: match args.pg_listen.or(file.pg_listen) {
                Some(address) => address,
                None => parse(DEFAULT_PG_LISTEN)?,
            },
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_NODE_DATA_DIR)),
            regions,
            txn_mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("regiondb.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from/file\"\npg_listen = \"127.0.0.1:7000\"\n",
        )
        .unwrap();

        let defaults = SingleNodeConfig::resolve(&SingleArgs::default()).unwrap();
        assert_eq!(defaults.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(defaults.pg_listen.to_string(), DEFAULT_PG_LISTEN);

        let from_file = SingleNodeConfig::resolve(&SingleArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(from_file.data_dir, PathBuf::from("/from/file"));
        assert_eq!(from_file.pg_listen.port(), 7000);

        let flags = SingleArgs {
            config: Some(path),
            pg_listen: Some("127.0.0.1:7001".parse().unwrap()),
            data_dir: None,
            regions: RegionArgs::default(),
            merge: MergeArgs::default(),
            sql: SqlArgs {
                txn_mode: Some(TxnModeArg::Optimistic),
            },
        };
        let resolved = SingleNodeConfig::resolve(&flags).unwrap();
        assert_eq!(resolved.pg_listen.port(), 7001);
        assert_eq!(resolved.data_dir, PathBuf::from("/from/file"));
        assert_eq!(resolved.txn_mode, kv::TxnMode::Optimistic);
        assert_eq!(defaults.txn_mode, kv::TxnMode::Pessimistic);
    }

    #[test]
    fn cluster_node_settings_resolve_flags_over_file_over_defaults() {
        let defaults = NodeConfig::resolve(&NodeArgs::default()).unwrap();
        assert_eq!(defaults.scheduler.to_string(), DEFAULT_SCHEDULER_LISTEN);
        assert_eq!(defaults.listen.to_string(), DEFAULT_NODE_LISTEN);
        assert_eq!(defaults.pg_listen.to_string(), DEFAULT_PG_LISTEN);
        assert_eq!(defaults.data_dir, PathBuf::from(DEFAULT_NODE_DATA_DIR));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "scheduler = \"10.0.0.1:2379\"\nlisten = \"127.0.0.1:20001\"\n",
        )
        .unwrap();
        let args = NodeArgs {
            listen: Some("127.0.0.1:20002".parse().unwrap()),
            config: Some(path),
            ..NodeArgs::default()
        };
        let resolved = NodeConfig::resolve(&args).unwrap();
        assert_eq!(resolved.scheduler.to_string(), "10.0.0.1:2379");
        assert_eq!(resolved.listen.port(), 20002);
    }

    #[test]
    fn scheduler_settings_resolve_like_the_node_settings() {
        let args = SchedulerArgs {
            listen: None,
            data_dir: None,
            max_store_down_time: None,
            config: None,
            merge: MergeArgs::default(),
        };
        let defaults = SchedulerConfig::resolve(&args).unwrap();
        assert_eq!(defaults.listen.to_string(), DEFAULT_SCHEDULER_LISTEN);
        assert_eq!(defaults.data_dir, PathBuf::from(DEFAULT_SCHEDULER_DATA_DIR));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheduler.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7379\"\nmax_merge_region_size = \"1MiB\"\n\
             split_merge_interval = \"10m\"\n",
        )
        .unwrap();
        let args = SchedulerArgs {
            listen: None,
            data_dir: Some("/flag".into()),
            max_store_down_time: Some("30s".parse().unwrap()),
            config: Some(path),
            merge: MergeArgs {
                split_merge_interval: Some("0s".parse().unwrap()),
                max_merge_region_keys: Some(50),
                ..MergeArgs::default()
            },
        };
        let resolved = SchedulerConfig::resolve(&args).unwrap();
        assert_eq!(
            (resolved.listen.port(), resolved.data_dir),
            (7379, PathBuf::from("/flag"))
        );
        assert_eq!(
            resolved.max_store_down_time,
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            resolved.merge,
            MergeSettings {
                max_size: Some(1 << 20),
                max_keys: Some(50),
                split_merge_interval: Some(std::time::Duration::ZERO),
            }
        );
        let mut merge = scheduler::MergeConfig::default();
        resolved.merge.apply(&mut merge);
        assert_eq!((merge.max_size, merge.max_keys), (1 << 20, 50));
        assert!(merge.split_merge_interval.is_zero());
    }

    #[test]
    fn region_sizes_come_from_flags_or_the_file_with_a_derived_partner() {
        let defaults = SingleNodeConfig::resolve(&SingleArgs::default()).unwrap();
        assert_eq!(
            defaults.regions,
            RegionSizes {
                split_size: DEFAULT_REGION_SPLIT_SIZE,
                max_size: DEFAULT_REGION_MAX_SIZE
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "region_split_size = \"64KiB\"\nregion_max_size = 131072\n",
        )
        .unwrap();
        let from_file = NodeConfig::resolve(&NodeArgs {
            config: Some(path.clone()),
            ..NodeArgs::default()
        })
        .unwrap();
        assert_eq!(from_file.regions.split_size, ByteSize(64 << 10));
        assert_eq!(from_file.regions.max_size, ByteSize(128 << 10));
        let cli = Cli::try_parse_from(["regiondb", "--region-split-size", "1MiB"]).unwrap();
        let only_split = SingleNodeConfig::resolve(&cli.single).unwrap();
        assert_eq!(only_split.regions.max_size, ByteSize(3 << 19));
        let cli = Cli::try_parse_from([
            "regiondb",
            "node",
            "--region-split-size",
            "2MiB",
            "--region-max-size",
            "1MiB",
        ])
        .unwrap();
        let Some(Command::Node(args)) = &cli.command else {
            panic!("not a node command")
        };
        assert!(
            NodeConfig::resolve(args)
                .unwrap_err()
                .contains("must not be less")
        );
        assert!(Cli::try_parse_from(["regiondb", "--region-max-size", "lots"]).is_err());
    }

    #[test]
    fn bad_config_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let args = SingleArgs {
            config: Some(path),
            ..Default::default()
        };
        assert!(
            SingleNodeConfig::resolve(&args)
                .unwrap_err()
                .contains("invalid config file")
        );
        let missing = SingleArgs {
            config: Some("/nonexistent.toml".into()),
            ..Default::default()
        };
        assert!(
            SingleNodeConfig::resolve(&missing)
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
