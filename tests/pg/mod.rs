//! A throwaway PostgreSQL server for integration tests.
//!
//! One server per test binary, started on first use ([`database`]) from the
//! `initdb`/`pg_ctl` of the Debian package `postgresql`
//! (`/usr/lib/postgresql/<version>/bin`), from `PATH`, or from the directory
//! `$MODELUX_PG_BIN_DIR` names, in a temp dir under `/tmp`, on a
//! free loopback port, with trust authentication for the user `modelux`.
//! PostgreSQL refuses to run as root, so as root the server runs as the
//! `postgres` OS user (via `runuser`). Each test gets its own database.
//!
//! The server is stopped (`pg_ctl stop -m immediate`) and its directory
//! removed when the [`PgServer`] is dropped, and, for the shared server (a
//! static, which Rust never drops), by a watchdog process that waits for the
//! test binary to exit.
//!
//! Missing binaries are a test failure, never a silent pass.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;

/// The OS user that runs the server when the tests run as root.
const PG_OS_USER: &str = "postgres";
/// The database superuser created by `initdb`.
const PG_USER: &str = "modelux";

/// A running PostgreSQL server.
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_pg_user: bool,
    watchdog: Mutex<Option<Child>>,
}

static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The shared server, started on first use. Panics (failing the test) if
/// it cannot be started, e.g. when PostgreSQL is not installed.
pub fn server() -> &'static PgServer {
    match SERVER.get_or_init(PgServer::start) {
        Ok(server) => server,
        Err(e) => panic!("{e}"),
    }
}

/// Creates a fresh database on the shared server and returns its URL,
/// `postgres://modelux@127.0.0.1:<port>/<name>`.
pub async fn database(prefix: &str) -> String {
    let server = tokio::task::spawn_blocking(server)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name: String = format!("{prefix}_{}_{n}", std::process::id())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut admin = sqlx::PgConnection::connect(&server.url("postgres"))
        .await
        .expect("connect to the test server's postgres database");
    sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("CREATE DATABASE");
    admin.close().await.ok();
    server.url(&name)
}

impl PgServer {
    /// Initializes and starts a server in a new temp dir.
    pub fn start() -> Result<PgServer, String> {
        let bin = find_bin_dir().ok_or_else(|| {
            "PostgreSQL server binaries (initdb, pg_ctl) not found in $MODELUX_PG_BIN_DIR, \
             /usr/lib/postgresql/*/bin or on PATH: install the Debian package `postgresql` (apt-get install -y postgresql) \
             to run the PostgreSQL store tests"
                .to_owned()
        })?;
        let as_pg_user = is_root();
        if as_pg_user && !run_ok(Command::new("id").args(["-u", PG_OS_USER])) {
            return Err(format!(
                "running as root, PostgreSQL must run as the `{PG_OS_USER}` OS user, which does \
                 not exist: install the Debian package `postgresql`, which creates it"
            ));
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // As root, under /tmp: the `postgres` user must be able to reach it.
        let tmp = if as_pg_user {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tmp.join(format!("modelux-pg-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut server = PgServer {
            bin,
            dir,
            port: 0,
            as_pg_user,
            watchdog: Mutex::new(None),
        };
        // TLS with the test CA's certificate (it names 127.0.0.1): the
        // store's TLS is tested against a real server, and every other test
        // runs over TLS too (sslmode `prefer`, sqlx's default). The key must
        // be the server's own and unreadable by others.
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
        for (from, to) in [
            ("provider.pem", "server.pem"),
            ("provider.key", "server.key"),
        ] {
            std::fs::copy(fixtures.join(from), server.dir.join(to))
                .map_err(|e| format!("copy {from}: {e}"))?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                server.dir.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .map_err(|e| format!("chmod server.key: {e}"))?;
        }
        if as_pg_user {
            let owner = format!("{PG_OS_USER}:{PG_OS_USER}");
            if !run_ok(Command::new("chown").arg("-R").arg(&owner).arg(&server.dir)) {
                return Err(format!("chown {owner} {} failed", server.dir.display()));
            }
        }
        let data = server.data_dir();
        let initdb = server
            .pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                PG_USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&initdb.stdout),
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        // The port is free when picked; another process may take it before
        // the server binds, so try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port()?;
            match server.pg_ctl_start() {
                Ok(()) => {
                    server.spawn_watchdog();
                    return Ok(server);
                }
                Err(e) => last_error = e,
            }
        }
        Err(format!("pg_ctl start failed: {last_error}"))
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// A server binary, run as the `postgres` OS user when we are root.
    fn pg_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_pg_user {
            let mut c = Command::new("runuser");
            c.args(["-u", PG_OS_USER, "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c ssl=on -c ssl_cert_file={}/server.pem -c ssl_key_file={}/server.key",
            self.port,
            self.dir.display(),
            self.dir.display(),
            self.dir.display()
        );
        // pg_ctl redirects the server's output to the log file, so nothing
        // keeps our stdio open.
        let status = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("running pg_ctl: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            Err(format!(
                "pg_ctl start exited with {status}; server log:\n{log}"
            ))
        }
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), keeping its
    /// data: clients see their connections drop and new ones refused.
    #[allow(dead_code)]
    pub fn stop(&self) -> Result<(), String> {
        let status = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "60", "stop", "-m", "immediate"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("running pg_ctl: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("pg_ctl stop exited with {status}"))
        }
    }

    /// Starts a stopped server again on the same port.
    #[allow(dead_code)]
    pub fn restart(&self) -> Result<(), String> {
        self.pg_ctl_start()
    }

    /// The shell command that stops the server immediately and removes its dir.
    fn stop_script(&self) -> String {
        let pg_ctl = self.bin.join("pg_ctl");
        let prefix = if self.as_pg_user {
            format!("runuser -u {PG_OS_USER} -- ")
        } else {
            String::new()
        };
        format!(
            "{prefix}'{}' -D '{}' stop -m immediate >/dev/null 2>&1; rm -rf '{}'",
            pg_ctl.display(),
            self.data_dir().display(),
            self.dir.display()
        )
    }

    /// A process in its own process group that stops the server once this
    /// test binary has exited, however it exits.
    fn spawn_watchdog(&self) {
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 0.5; done; {}",
            std::process::id(),
            self.stop_script()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        if let Ok(child) = child {
            *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(self.stop_script())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut w) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// `$MODELUX_PG_BIN_DIR` if set, else `/usr/lib/postgresql/<newest>/bin`,
/// else the first `PATH` entry holding both `initdb` and `pg_ctl`.
fn find_bin_dir() -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("MODELUX_PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        return has_both(&dir).then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_both(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| has_both(d))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}
