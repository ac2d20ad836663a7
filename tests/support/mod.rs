//! Test support: start the real `regiondb` binary, and a minimal PostgreSQL wire client that
//! exposes what drivers hide (command tags, ReadyForQuery status, type OIDs).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `regiondb ARGS --data-dir DIR` and waits for the first stdout line containing
/// `ready_marker`; returns the process and that line. Stdout keeps being drained so the
/// process never blocks on a full pipe.
pub fn spawn_regiondb(args: &[&str], data_dir: &Path, ready_marker: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regiondb"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start regiondb");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = loop {
        let line = lines
            .next()
            .expect("regiondb exited before it was ready")
            .expect("read stdout");
        if line.contains(ready_marker) {
            break line;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, ready)
}

/// Fresh RegionDB nodes started with `flags`, one per script: each call starts one, and the
/// closure it returns opens sessions on it (and keeps it and its data alive).
pub fn fresh_node_per_script(
    flags: &'static [&'static str],
) -> impl FnMut() -> sql::script::SessionFactory {
    move || {
        let data = tempfile::tempdir().expect("temporary directory");
        let node = Node::start_with(data.path(), flags);
        Box::new(move || {
            let _keep = &data;
            Box::new(node.connect()) as Box<dyn sql::script::ScriptSession>
        }) as sql::script::SessionFactory
    }
}

/// A running `regiondb` process on an ephemeral port.
pub struct Node {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
}

impl Node {
    /// Starts `regiondb --data-dir DIR --pg-listen 127.0.0.1:0` and waits until it prints the
    /// port it listens on.
    pub fn start(data_dir: &Path) -> Node {
        Node::start_with(data_dir, &[])
    }

    /// `start` with more flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> Node {
        let mut args = vec!["--pg-listen", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let (child, line) = spawn_regiondb(&args, data_dir, " -p ");
        let port = line
            .split(" -p ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Node {
            child,
            port,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn connect(&self) -> WireClient {
        WireClient::connect(self.port)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        self.wait_exit(Duration::from_secs(30))
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "regiondb did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the server sent in answer to one Query, up to and including ReadyForQuery.
#[derive(Debug, Default)]
pub struct Reply {
    /// (name, type OID) per column of the last RowDescription.
    pub columns: Vec<(String, u32)>,
    pub rows: Vec<Vec<Option<String>>>,
    pub tags: Vec<String>,
    /// (SQLSTATE, message) of an ErrorResponse.
    pub error: Option<(String, String)>,
    pub empty: bool,
    /// ReadyForQuery status: b'I', b'T' or b'E'.
    pub status: u8,
}

impl Reply {
    pub fn code(&self) -> Option<&str> {
        self.error.as_ref().map(|(code, _)| code.as_str())
    }
}

pub struct WireClient {
    stream: TcpStream,
    /// ReadyForQuery status of the last reply.
    last_status: u8,
}

fn put_cstr(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

impl WireClient {
    pub fn connect(port: u16) -> WireClient {
        WireClient::connect_to(port, "postgres")
    }

    pub fn connect_to(port: u16, database: &str) -> WireClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut client = WireClient {
            stream,
            last_status: b'I',
        };
        let mut body = Vec::new();
        body.extend_from_slice(&196608u32.to_be_bytes());
        put_cstr(&mut body, "user");
        put_cstr(&mut body, "postgres");
        put_cstr(&mut body, "database");
        put_cstr(&mut body, database);
        body.push(0);
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend(body);
        client.stream.write_all(&msg).unwrap();
        let reply = client.read_reply();
        assert!(reply.error.is_none(), "startup failed: {:?}", reply.error);
        client
    }

    fn read_message(&mut self) -> (u8, Vec<u8>) {
        let mut header = [0u8; 5];
        self.stream
            .read_exact(&mut header)
            .expect("read message header");
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        self.stream
            .read_exact(&mut body)
            .expect("read message body");
        (header[0], body)
    }

    fn read_reply(&mut self) -> Reply {
        let mut reply = Reply::default();
        loop {
            let (kind, body) = self.read_message();
            match kind {
                b'T' => {
                    reply.columns.clear();
                    let count = u16::from_be_bytes([body[0], body[1]]) as usize;
                    let mut at = 2;
                    for _ in 0..count {
                        let end = at + body[at..].iter().position(|&b| b == 0).unwrap();
                        let name = String::from_utf8(body[at..end].to_vec()).unwrap();
                        at = end + 1;
                        let oid = u32::from_be_bytes(body[at + 6..at + 10].try_into().unwrap());
                        at += 18;
                        reply.columns.push((name, oid));
                    }
                }
                b'D' => {
                    let count = u16::from_be_bytes([body[0], body[1]]) as usize;
                    let mut at = 2;
                    let mut row = Vec::with_capacity(count);
                    for _ in 0..count {
                        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                        at += 4;
                        if len < 0 {
                            row.push(None);
                        } else {
                            let len = len as usize;
                            row.push(Some(
                                String::from_utf8(body[at..at + len].to_vec()).unwrap(),
                            ));
                            at += len;
                        }
                    }
                    reply.rows.push(row);
                }
                b'C' => {
                    let tag = String::from_utf8(body[..body.len() - 1].to_vec()).unwrap();
                    reply.tags.push(tag);
                }
                b'E' => {
                    let (mut code, mut message) = (String::new(), String::new());
                    let mut at = 0;
                    while at < body.len() && body[at] != 0 {
                        let field = body[at];
                        let end = at + 1 + body[at + 1..].iter().position(|&b| b == 0).unwrap();
                        let value = String::from_utf8_lossy(&body[at + 1..end]).to_string();
                        match field {
                            b'C' => code = value,
                            b'M' => message = value,
                            _ => {}
                        }
                        at = end + 1;
                    }
                    reply.error = Some((code, message));
                }
                b'I' => reply.empty = true,
                b'Z' => {
                    reply.status = body[0];
                    return reply;
                }
                // AuthenticationOk, ParameterStatus, BackendKeyData, NoticeResponse.
                b'R' | b'S' | b'K' | b'N' => {}
                other => panic!("unexpected message type {:?}", other as char),
            }
        }
    }

    /// Sends one simple Query and collects the reply.
    pub fn query(&mut self, sql: &str) -> Reply {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        put_cstr(&mut msg, sql);
        self.stream.write_all(&msg).unwrap();
        self.read_reply()
    }

    /// A query that must succeed; returns its reply.
    pub fn ok(&mut self, sql: &str) -> Reply {
        let reply = self.query(sql);
        assert!(reply.error.is_none(), "{sql}: {:?}", reply.error);
        reply
    }

    /// A query whose rows, as text with NULL as "NULL", joined by ",".
    pub fn rows(&mut self, sql: &str) -> Vec<String> {
        self.ok(sql)
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }
}

impl sql::script::ScriptSession for WireClient {
    fn run(&mut self, sql: &str) -> Result<Option<sql::StatementResult>, sql::script::Failure> {
        let reply = self.query(sql);
        self.last_status = reply.status;
        if let Some((code, message)) = reply.error {
            return Err(sql::script::Failure { code, message });
        }
        let Some(tag) = reply.tags.last().cloned() else {
            return Ok(None);
        };
        if reply.columns.is_empty() {
            return Ok(Some(sql::StatementResult::Command { tag }));
        }
        let columns = reply
            .columns
            .iter()
            .map(|(name, oid)| sql::ColumnInfo {
                name: name.clone(),
                type_oid: *oid,
                type_size: -1,
            })
            .collect();
        Ok(Some(sql::StatementResult::Rows {
            columns,
            rows: reply.rows,
            tag,
        }))
    }

    fn status(&mut self) -> sql::TransactionStatus {
        match self.last_status {
            b'T' => sql::TransactionStatus::InBlock,
            b'E' => sql::TransactionStatus::Failed,
            _ => sql::TransactionStatus::Idle,
        }
    }
}

/// A PostgreSQL server of this machine (for comparing outcomes), in a temporary directory on
/// an ephemeral port, stopped when dropped. Run as the `postgres` user when the tests run as
/// root (PostgreSQL refuses root). `scripts/test.sh` installs PostgreSQL if it is missing.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    data: tempfile::TempDir,
    as_postgres: bool,
}

impl Postgres {
    /// Where `pg_ctl` and `initdb` are: on PATH, else Debian's versioned directory.
    fn bin_dir() -> PathBuf {
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .find(|dir| dir.join("pg_ctl").is_file() && dir.join("initdb").is_file());
        let debian = std::fs::read_dir("/usr/lib/postgresql")
            .map(|entries| {
                let mut dirs: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|dir| dir.join("pg_ctl").is_file())
                    .collect();
                dirs.sort();
                dirs.pop()
            })
            .ok()
            .flatten();
        on_path.or(debian).expect(
            "PostgreSQL's server binaries (pg_ctl, initdb) are not installed: run scripts/test.sh, \
             which installs them",
        )
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Starts a server on a free port (tried again on another port if the one picked was
    /// taken meanwhile by a parallel test).
    pub fn start() -> Postgres {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Postgres::try_start() {
                Ok(server) => return server,
                Err(e) => failures.push(e),
            }
        }
        panic!("PostgreSQL did not start: {failures:#?}");
    }

    fn try_start() -> Result<Postgres, String> {
        let bin = Self::bin_dir();
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_postgres {
            let status = Command::new("chown")
                .arg("postgres")
                .arg(data.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!("chown postgres {}", data.path().display()));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?
            .port();
        let server = Postgres {
            port,
            bin,
            data,
            as_postgres,
        };
        let dir = server.data.path().join("pg");
        let output = server
            .command("initdb")
            .args(["-U", "postgres", "-A", "trust", "-D"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("run initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.display()
        );
        let output = server
            .command("pg_ctl")
            .arg("-D")
            .arg(&dir)
            .args(["-o", &options, "-l"])
            .arg(dir.join("log"))
            .args(["-w", "start"])
            .output()
            .map_err(|e| format!("run pg_ctl start: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "pg_ctl start failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            ));
        }
        Ok(server)
    }

    pub fn connect(&self) -> WireClient {
        WireClient::connect(self.port)
    }

    /// A fresh database on this server (scripts each get one), connected to by `connect_to`.
    pub fn create_database(&self, name: &str) {
        self.connect().ok(&format!("CREATE DATABASE {name}"));
    }

    pub fn connect_to(&self, database: &str) -> WireClient {
        WireClient::connect_to(self.port, database)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data.path().join("pg"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
