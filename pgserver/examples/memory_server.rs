//! A throwaway RegionDB SQL endpoint over an in-memory store, for poking at the wire protocol
//! with real clients:
//!
//! ```text
//! cargo run -p pgserver --example memory_server -- 127.0.0.1:5433
//! psql -h 127.0.0.1 -p 5433 -U anyone regiondb
//! ```
//!
//! Data lives only as long as the process. Stops on Ctrl-C.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5433".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let result = pgserver::serve(listener, sql::Database::in_memory(), shutdown).await;
    eprintln!("stopped");
    result
}
