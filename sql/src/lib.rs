//! RegionDB's SQL layer: statement text in, result sets out.
//!
//! A [`Session`] parses with sqlparser's PostgreSQL dialect, binds names and types against the
//! catalog ([`catalog`], [`expr`]), chooses how to read each table ([`exec::scan`]: point get,
//! primary-key range or full scan) and executes ([`exec`]) inside a
//! [`kv::Transaction`] — the only thing it knows about storage. Rows and keys are encoded by
//! [`encoding`]; values and types by [`types`]; every error carries a PostgreSQL SQLSTATE
//! ([`error`]).
//!
//! What SQL works today: `CREATE TABLE` (integer, floating-point, text/varchar/char and boolean
//! columns, `PRIMARY KEY` incl. composite, `NOT NULL`, constant `DEFAULT`), `DROP TABLE`,
//! `INSERT … VALUES`, `SELECT` over one table (WHERE, ORDER BY, LIMIT/OFFSET, FOR UPDATE),
//! `UPDATE`, `DELETE`, `BEGIN`/`COMMIT`/`ROLLBACK`. Everything else is refused with 0A000.
//!
//! Regions: `SHOW REGIONS [FROM TABLE t]` lists the cluster's regions with their boundaries
//! written for humans ([`key_display`]), `ALTER TABLE t SPLIT AT VALUES (…)` splits on demand
//! (both in `exec::regions`; sqlparser does not know them, so `region_syntax`
//! recognises them first), and every table created gets a region of its own once its
//! transaction commits. A [`Database`] without a
//! [`RegionAdmin`](kv::client::RegionAdmin) (in memory) refuses the two statements with 0A000.

pub mod bind;
pub mod catalog;
pub mod check;
mod database;
pub mod encoding;
pub mod error;
pub mod exec;
pub mod expr;
pub mod foreign_key;
pub mod index;
pub mod key_display;
pub mod optimizer;
mod parse;
pub mod plan;
mod region_syntax;
pub mod schema_change;
pub mod scope;
pub mod script;
pub mod sequence;
mod session;
mod settings;
pub mod types;

pub use database::Database;
pub use error::{SqlError, SqlResult};
pub use exec::{ColumnInfo, ResultSink, StatementResult, spill_files_created};
pub use session::{Session, TransactionStatus};
