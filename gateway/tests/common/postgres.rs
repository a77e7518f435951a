//! A throw-away PostgreSQL cluster from Debian's packages (`postgresql-15`, which `cargo xtask`
//! installs): made with initdb in a scratch directory, served on a free loopback port as the
//! `postgres` user (initdb refuses root), stopped and deleted when dropped (or when the test
//! process dies). It can be stopped
//! and started again under load, as a database restart would.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The user the server runs as: `postgres` when the tests run as root.
    user: Option<(u32, u32)>,
    server: Option<Child>,
    databases: u32,
}

/// The newest installed server's programs.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: `cargo xtask ci` installs postgresql-15")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server under /usr/lib/postgresql: install postgresql-15")
}

impl Cluster {
    /// A new cluster, serving.
    pub fn start(tag: &str) -> Cluster {
        let dir = super::scratch(&format!("pg-{tag}"));
        let user = nix::unistd::geteuid().is_root().then(|| {
            let pg = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("the postgres user (made by Debian's postgresql package)");
            std::os::unix::fs::chown(&dir, Some(pg.uid.as_raw()), Some(pg.gid.as_raw())).unwrap();
            (pg.uid.as_raw(), pg.gid.as_raw())
        });
        let mut cluster = Cluster {
            bin: bin_dir(),
            port: super::free_port(),
            user,
            server: None,
            databases: 0,
            dir,
        };
        let out = cluster
            .command("initdb")
            .args([
                "-D",
                "data",
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.resume();
        cluster
    }

    /// `program` run through setpriv: as the cluster's user, and sent SIGINT (a fast
    /// shutdown, for the server) if the test dies without dropping the cluster.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("setpriv");
        if let Some((uid, gid)) = self.user {
            cmd.args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
            ]);
        }
        cmd.args(["--pdeathsig", "INT"])
            .arg(self.bin.join(program))
            .current_dir(&self.dir)
            .env_clear()
            .env("LANG", "C.UTF-8");
        cmd
    }

    /// Starts the server (again) and waits until it takes connections.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "the cluster is serving already");
        let mut cmd = self.command("postgres");
        cmd.args(["-D", "data", "-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.server = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self
                .command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .unwrap()
                .success();
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (a fast shutdown: clients are disconnected), keeping its data.
    pub fn pause(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(server.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        server.wait().unwrap();
    }

    /// A new empty database; answers its URL.
    pub fn database(&mut self) -> String {
        self.databases += 1;
        let name = format!("orgo_{}", self.databases);
        let out = self
            .command("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                &name,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres:unused@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.pause();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
