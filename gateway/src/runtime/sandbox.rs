//! The local runtime's sandbox: what bubblewrap is told so that code in a desktop gets no
//! privilege, no host files and no host network, and the user-mode network stack that gives it
//! the internet. `strict` (the default) is a user namespace with one uid, 1000 (`user`), mapped
//! to a host uid of the desktop's own when the gateway is root (each desktop a distinct
//! unprivileged user to the kernel, from a range no account or subordinate-id range uses), or to
//! the gateway's own uid when it is not (an ordinary user can map no other without a setuid
//! helper); every capability dropped and `no_new_privs`; a read-only allow-list of the system
//! (`/usr`, the merged-/usr links, chosen `/etc` entries, generated passwd/group/hosts/
//! resolv.conf); the desktop's own home, and `/tmp` and its run dir on size-limited tmpfs; a
//! private /proc, a minimal /dev, a read-only /sys holding only its own cgroups; its own
//! network namespace behind slirp4netns with the host's loopback refused; a seccomp filter from `seccompiler`; a cleared environment.
//! What the sandbox gets from the host's data dir (its home, the generated files, the agent)
//! it gets as file descriptors the gateway opens, so no host path has to be reachable by the
//! desktop's user. `none` is the old, open mode, allowed only when asked for by name. A machine
//! that cannot give `strict` refuses to start the runtime with a sentence naming the package or
//! sysctl that is missing.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::RuntimeError;
use super::cgroup::Groups;
use super::home::Owner;
use super::programs::require;
use crate::config::LocalSandbox;

/// The `/etc` entries a desktop sees (read-only), besides the generated ones and `python3*`:
/// what libc, fontconfig, TLS, X, GTK, Chromium, Python and the shells read. Not shadow,
/// sudoers, ssh, the package manager's or any service's configuration.
const ETC: &[&str] = &[
    "X11",
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "chromium",
    "chromium.d",
    "dconf",
    "debian_version",
    "environment",
    "fonts",
    "gai.conf",
    "glvnd",
    "gtk-2.0",
    "gtk-3.0",
    "host.conf",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "magic",
    "magic.mime",
    "mime.types",
    "networks",
    "nsswitch.conf",
    "os-release",
    "profile",
    "profile.d",
    "protocols",
    "services",
    "shells",
    "ssl",
    "terminfo",
    "timezone",
    "xdg",
    "xml",
];

/// Files the sandbox writes for every desktop (the same for all): the desktop user, its group,
/// the names of loopback and the resolver slirp4netns provides.
const GENERATED: &[(&str, &str)] = &[
    (
        "passwd",
        "user:x:1000:1000:user:/home/user:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    ),
    ("group", "user:x:1000:\nnogroup:x:65534:\n"),
    (
        "hosts",
        "127.0.0.1\tlocalhost desktop\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    ),
    ("resolv.conf", "nameserver 10.0.2.3\n"),
];

/// The host directories of the merged-/usr layout: a symlink is recreated, a directory bound.
const USR_LINKS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// The host uids (and gids) of desktops under a root gateway, one each: 0x7000_0000 on, past
/// the ranges systemd gives to users, containers and nspawn, and checked at start against the
/// machine's accounts and subordinate-id ranges.
const DESKTOP_IDS: std::ops::Range<u32> = 0x7000_0000..0x7001_0000;

/// Where the agent listens inside the sandbox, and the sizes of the tmpfs there and on /tmp.
const RUN_DIR: &str = "/run/orgo";
const RUN_BYTES: u64 = 16 << 20;
const TMP_BYTES: u64 = 1 << 30;

/// What the sandbox of every desktop is made of, prepared once per gateway.
pub struct Sandbox {
    mode: LocalSandbox,
    /// Generated `/etc` files and the compiled seccomp filter, under the data dir.
    dir: PathBuf,
    /// The bubblewrap arguments every strict desktop shares.
    common: Vec<OsString>,
}

/// The user-mode network of one desktop: slirp4netns, which exits when its stdin (the exit fd)
/// closes, so it ends with the desktop and with the gateway.
pub struct Network {
    slirp: Child,
}

impl Network {
    /// The host pid of slirp4netns, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.slirp.id()
    }
}

impl Sandbox {
    /// Checks that this machine can sandbox desktops in `mode` and writes the files every
    /// desktop shares.
    pub fn prepare(data_dir: &Path, mode: LocalSandbox) -> anyhow::Result<Sandbox> {
        require("bwrap", "bubblewrap")?;
        let dir = data_dir.join("sandbox");
        if mode == LocalSandbox::None {
            return Ok(Sandbox {
                mode,
                dir,
                common: Vec::new(),
            });
        }
        require("slirp4netns", "slirp4netns")?;
        if nix::unistd::geteuid().is_root() {
            require("unshare", "util-linux")?;
        }
        // slirp4netns opens the tun device as the gateway's user.
        if nix::unistd::access(
            "/dev/net/tun",
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        )
        .is_err()
        {
            bail!(
                "the local runtime's network needs /dev/net/tun, which this user ({}) cannot open: \
                 load the tun module (modprobe tun) and make the device crw-rw-rw- as Debian does, \
                 or run the gateway as root, or set local_sandbox = \"none\"",
                nix::unistd::geteuid()
            );
        }
        std::fs::create_dir_all(dir.join("etc"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, text) in GENERATED {
            std::fs::write(dir.join("etc").join(name), text)
                .with_context(|| format!("cannot write the sandbox's /etc/{name}"))?;
        }
        for (name, program) in seccomp_programs()? {
            std::fs::write(dir.join(name), program_bytes(&program))
                .context("cannot write the seccomp filter")?;
        }
        let sandbox = Sandbox {
            mode,
            common: common_args()?,
            dir,
        };
        sandbox.check_user_namespaces()?;
        if nix::unistd::geteuid().is_root() {
            check_desktop_ids()?;
        }
        Ok(sandbox)
    }

    pub fn mode(&self) -> LocalSandbox {
        self.mode
    }

    /// An empty sandbox runs `true`: refuses with the sysctl to set when the kernel does not
    /// let this user make user and network namespaces.
    fn check_user_namespaces(&self) -> anyhow::Result<()> {
        let out = std::process::Command::new("bwrap")
            .args(&self.common)
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .context("cannot run bwrap")?;
        if !out.status.success() {
            bail!(
                "the local runtime cannot sandbox desktops: bubblewrap could not make a user and network namespace ({}). \
                 Allow unprivileged user namespaces (sysctl user.max_user_namespaces=15000, and on kernels that have them \
                 kernel.unprivileged_userns_clone=1 and kernel.apparmor_restrict_unprivileged_userns=0), \
                 or set local_sandbox = \"none\" to run desktops unsandboxed",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The shell line that holds the desktop at its gate (until a line arrives on stdin) and
    /// then runs bubblewrap, with bubblewrap's info on fd 3 (the shell's stdout, a pipe to the
    /// gateway) and stdin /dev/null; the desktop's stdout goes where the gateway's stderr goes,
    /// never into the info pipe. Its arguments are the sandbox's dir, the desktop's home and
    /// the agent binary, then bubblewrap's command line. In strict mode the shell, still the
    /// gateway's user, also opens what bubblewrap binds by descriptor: the seccomp filters
    /// (fds 4 and 5), the gate's pipe again (fd 6, where the sandbox waits for its user
    /// mapping, `map_user`), the generated `/etc` files (7), the home (8) and the agent (9).
    pub fn gate_script(&self) -> &'static str {
        match self.mode {
            LocalSandbox::Strict => {
                "read _ && d=$1 h=$2 a=$3 && shift 3 && exec \"$@\" 3>&1 1>&2 4<\"$d/denied.bpf\" 5<\"$d/clone3.bpf\" \
                 6<&0 7<\"$d/etc\" 8<\"$h\" 9<\"$a\" </dev/null"
            }
            LocalSandbox::None => "read _ && shift 3 && exec \"$@\" 3>&1 1>&2 </dev/null",
        }
    }

    /// The program the gate runs bubblewrap with, for a desktop of `owner`: bubblewrap runs as
    /// the desktop's host user from the start, since the user namespace it makes can only map
    /// the ids its creator has (`setpriv` from util-linux, when the gateway is root).
    pub fn launcher(&self, owner: Owner) -> Vec<OsString> {
        let mut launcher = Vec::new();
        if self.mode == LocalSandbox::Strict && nix::unistd::geteuid().as_raw() != owner.uid {
            launcher.extend(
                [
                    "setpriv".to_string(),
                    format!("--reuid={}", owner.uid),
                    format!("--regid={}", owner.gid),
                    "--clear-groups".to_string(),
                ]
                .map(OsString::from),
            );
        }
        launcher.push("bwrap".into());
        launcher
    }

    /// The first argument of the gate script: where the compiled seccomp filters are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bubblewrap arguments that isolate a desktop whose home is mounted on `home`, ending
    /// where the command starts.
    pub fn args(&self, home: &Path, agent_bin: &Path, groups: &Groups) -> Vec<OsString> {
        let mut args: Vec<OsString> = match self.mode {
            LocalSandbox::Strict => self.common.clone(),
            LocalSandbox::None => Vec::new(),
        };
        let mut add = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
            args.extend(items.iter().map(|a| a.as_ref().to_os_string()));
        };
        add(&[&"--info-fd", &"3"]);
        match self.mode {
            LocalSandbox::Strict => {
                add(&[
                    &"--userns-block-fd",
                    &"6",
                    &"--add-seccomp-fd",
                    &"4",
                    &"--add-seccomp-fd",
                    &"5",
                ]);
                add(&[
                    &"--ro-bind-fd",
                    &"7",
                    &"/etc/orgo",
                    &"--bind-fd",
                    &"8",
                    &"/home/user",
                ]);
                add(&[&"--ro-bind-fd", &"9", &"/run/orgo-agent"]);
            }
            LocalSandbox::None => {
                add(&[&"--unshare-pid", &"--unshare-ipc", &"--die-with-parent"]);
                add(&[&"--new-session", &"--ro-bind", &"/", &"/", &"--dev", &"/dev"]);
                add(&[&"--proc", &"/proc", &"--tmpfs", &"/run", &"--tmpfs", &"/home"]);
                // The data dir holds every desktop's files and the gateway's database.
                let data_dir = home.ancestors().nth(3).unwrap_or(home);
                add(&[&"--tmpfs", &data_dir]);
                add(&[
                    &"--bind",
                    &home,
                    &"/home/user",
                    &"--ro-bind",
                    &agent_bin,
                    &"/run/orgo-agent",
                ]);
            }
        }
        // Its own cgroups, read-only, where a container sees them: its limits (and a resize)
        // show inside, and nothing in them can be changed from there. Strict: in a /sys of
        // their own, read-only too, so that no file can be made beside them.
        let strict = self.mode == LocalSandbox::Strict;
        if strict {
            add(&[&"--tmpfs", &"/sys"]);
        }
        for (dir, inside) in groups.views() {
            add(&[&"--ro-bind", &dir, &inside]);
        }
        if strict {
            add(&[&"--remount-ro", &"/sys"]);
        }
        // /tmp and the agent's run dir in memory, which counts against the desktop's memory
        // limit, with a size limit each (1 GiB, as the Docker runtime's /tmp).
        add(&[
            &"--size",
            &TMP_BYTES.to_string(),
            &"--perms",
            &"1777",
            &"--tmpfs",
            &"/tmp",
        ]);
        add(&[&"--size", &RUN_BYTES.to_string(), &"--tmpfs", &RUN_DIR]);
        add(&[&"--setenv", &"HOME", &"/home/user", &"--setenv", &"USER", &"user"]);
        add(&[&"--setenv", &"DISPLAY", &":1", &"--setenv", &"RUST_LOG", &"warn"]);
        // A UTF-8 locale, as in the desktop images: a terminal in the C locale turns every
        // non-ASCII character typed into it into escapes.
        add(&[&"--setenv", &"LANG", &"C.utf8"]);
        add(&[&"--chdir", &"/home/user"]);
        args
    }

    /// The host ids the desktop whose files are in `desktop` runs as: in strict mode under a
    /// root gateway, its own, recorded as the owner of its directory (given to all its files the
    /// first time, so a desktop from before keeps its files); otherwise the gateway's.
    pub fn owner(&self, desktop: &Path) -> Result<Owner, RuntimeError> {
        let gateway = Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        };
        if self.mode == LocalSandbox::None || !nix::unistd::geteuid().is_root() {
            return Ok(gateway);
        }
        let owner_of = |dir: &Path| {
            std::fs::metadata(dir)
                .ok()
                .map(|m| m.uid())
                .filter(|u| DESKTOP_IDS.contains(u))
        };
        if let Some(uid) = owner_of(desktop) {
            return Ok(Owner { uid, gid: uid });
        }
        let taken: std::collections::BTreeSet<u32> = std::fs::read_dir(desktop.parent().unwrap_or(desktop))
            .into_iter()
            .flatten()
            .filter_map(|e| owner_of(&e.ok()?.path()))
            .collect();
        let uid = DESKTOP_IDS
            .clone()
            .find(|u| !taken.contains(u))
            .ok_or_else(|| RuntimeError::Failed("every desktop uid is taken".into()))?;
        let status = std::process::Command::new("chown")
            .args(["-R", &format!("{uid}:{uid}")])
            .arg(desktop)
            .status()
            .map_err(|e| RuntimeError::Failed(format!("cannot run chown: {e}")))?;
        if !status.success() {
            return Err(RuntimeError::Failed(format!(
                "cannot give the desktop its user: chown {status}"
            )));
        }
        Ok(Owner { uid, gid: uid })
    }

    /// Maps the desktop's uid and gid 1000 to `owner`, in the user namespace of the sandbox
    /// whose first process is `sandbox_pid` (waiting on fd 6 until then). The gateway writes
    /// the map rather than bubblewrap so that bubblewrap makes one user namespace, not a second
    /// one nested in the first: slirp4netns joins that one namespace, which owns the network
    /// namespace, whether the gateway is root or not.
    pub fn map_user(sandbox_pid: u32, owner: Owner) -> Result<(), RuntimeError> {
        let proc = Path::new("/proc").join(sandbox_pid.to_string());
        [
            ("setgroups", "deny".to_string()),
            ("uid_map", format!("1000 {} 1", owner.uid)),
            ("gid_map", format!("1000 {} 1", owner.gid)),
        ]
        .iter()
        .try_for_each(|(file, map)| std::fs::write(proc.join(file), map))
        .map_err(|e| RuntimeError::Failed(format!("cannot map the desktop's user: {e}")))
    }

    /// Where the gateway reaches the agent of the sandbox whose first process is
    /// `sandbox_pid`: its socket in the sandbox's own run dir (a tmpfs no host path leads to),
    /// through that process's root.
    pub fn agent_socket(sandbox_pid: u32) -> PathBuf {
        PathBuf::from(format!("/proc/{sandbox_pid}/root{RUN_DIR}/agent.sock"))
    }

    /// Whether bubblewrap has set up the sandbox whose first process is `sandbox_pid`: that
    /// process forks the command only once everything, the loopback device included, is in
    /// place. Before then slirp4netns must not touch the network namespace: configuring its tap
    /// device while bubblewrap configures loopback makes bubblewrap fail now and then.
    pub fn is_set_up(sandbox_pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{sandbox_pid}/task/{sandbox_pid}/children"))
            .is_ok_and(|c| !c.trim().is_empty())
    }

    /// Connects the network namespace of the sandbox whose first process is `sandbox_pid` to
    /// slirp4netns (once it `is_set_up`); `ready` answers once the interface is up.
    pub fn connect_network(&self, sandbox_pid: u32) -> Result<(Network, Ready), RuntimeError> {
        let netns = format!("/proc/{sandbox_pid}/ns/net");
        // slirp4netns logs on stdout: its ready fd is a copy of the pipe (fd 3), its stdout
        // /dev/null, so the pipe carries the ready byte alone.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec \"$@\" 3>&1 >/dev/null", "sh"]);
        // slirp4netns's own mount-namespace sandbox (which parses the desktop's packets) needs
        // root; an unprivileged gateway runs it with its seccomp filter only. That sandbox
        // makes only its root mount private before it detaches the old root, so a shared
        // mount under a shared parent (systemd's default; every kubelet's volumes) would be
        // unmounted on the host too: `unshare` gives it a namespace private all the way down.
        let root = nix::unistd::geteuid().is_root();
        if root {
            cmd.args(["unshare", "--mount", "--propagation", "private"]);
        }
        cmd.arg("slirp4netns")
            .args(["--configure", "--mtu=65520", "--disable-host-loopback"])
            .args([
                "--enable-seccomp",
                "--exit-fd=0",
                "--ready-fd=3",
                "--netns-type=path",
            ]);
        if root {
            cmd.arg("--enable-sandbox");
        }
        let mut slirp = cmd
            .arg(format!("--userns-path=/proc/{sandbox_pid}/ns/user"))
            .args([netns.as_str(), "tap0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::Failed(format!("cannot start slirp4netns: {e}")))?;
        let ready = Ready(slirp.stdout.take());
        Ok((Network { slirp }, ready))
    }
}

/// slirp4netns's ready fd.
pub struct Ready(Option<ChildStdout>);

impl Ready {
    /// Waits until the desktop's network is configured.
    pub async fn wait(&mut self) -> Result<(), RuntimeError> {
        let mut byte = [0u8; 1];
        match self.0.take() {
            Some(mut out) => match out.read(&mut byte).await {
                Ok(1) if byte == *b"1" => Ok(()),
                _ => Err(RuntimeError::Failed(
                    "slirp4netns exited before the desktop's network was up".into(),
                )),
            },
            None => Ok(()),
        }
    }
}

/// The host pid of the sandbox's first process, from bubblewrap's JSON info (read whole, so
/// bubblewrap never writes to a closed pipe).
pub async fn sandbox_pid(info: ChildStdout) -> Result<u32, RuntimeError> {
    let mut lines = BufReader::new(info).lines();
    let mut pid = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(rest) = line.trim().strip_prefix("\"child-pid\":") {
            pid = rest.trim().trim_end_matches(',').parse::<u32>().ok();
        }
        if line.starts_with('}') {
            break;
        }
    }
    pid.ok_or_else(|| RuntimeError::Failed("bubblewrap exited before its sandbox started".into()))
}

/// Refuses when an account (`/etc/passwd`, `/etc/group`) or a subordinate-id range
/// (`/etc/subuid`, `/etc/subgid`) of this machine falls among the desktops' host ids: a
/// desktop would be that user to the kernel.
fn check_desktop_ids() -> anyhow::Result<()> {
    let overlaps = |start: u64, count: u64| {
        start < u64::from(DESKTOP_IDS.end) && start + count > u64::from(DESKTOP_IDS.start)
    };
    for (file, id_field, count_field) in [
        ("/etc/passwd", 2, None),
        ("/etc/group", 2, None),
        ("/etc/subuid", 1, Some(2)),
        ("/etc/subgid", 1, Some(2)),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            let number = |i: usize| fields.get(i).and_then(|f| f.trim().parse::<u64>().ok());
            let count = count_field.map_or(Some(1), number);
            if let (Some(start), Some(count)) = (number(id_field), count)
                && overlaps(start, count)
            {
                bail!(
                    "the local sandbox gives desktops the host ids {}..{}, but {file} uses some of them \
                     ({line:?}): move that entry, or run the gateway as an ordinary user",
                    DESKTOP_IDS.start,
                    DESKTOP_IDS.end
                );
            }
        }
    }
    Ok(())
}

/// The strict bubblewrap arguments every desktop shares: namespaces, identity, the system
/// allow-list and the environment.
fn common_args() -> anyhow::Result<Vec<OsString>> {
    let mut args: Vec<OsString> = [
        "--unshare-user",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "desktop",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/local/bin:/usr/bin:/bin",
        "--setenv",
        "SHELL",
        "/bin/bash",
        "--setenv",
        "LOGNAME",
        "user",
        "--ro-bind",
        "/usr",
        "/usr",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--symlink",
        "/tmp",
        "/var/tmp",
        "--ro-bind-try",
        "/var/cache/fontconfig",
        "/var/cache/fontconfig",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    for name in USR_LINKS {
        let host = Path::new("/").join(name);
        match std::fs::read_link(&host) {
            Ok(target) => args.extend(["--symlink".into(), target.into(), host.into()]),
            Err(_) if host.is_dir() => args.extend(["--ro-bind".into(), host.clone().into(), host.into()]),
            Err(_) => {}
        }
    }
    let etc = std::fs::read_dir("/etc").context("cannot list /etc")?;
    let mut names: Vec<String> = etc
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| ETC.contains(&n.as_str()) || n.starts_with("python3"))
        .collect();
    names.sort();
    for name in names {
        let path = Path::new("/etc").join(name);
        args.extend(["--ro-bind".into(), path.clone().into(), path.into()]);
    }
    // The generated files are bound as a directory, by descriptor, on /etc/orgo.
    for (name, _) in GENERATED {
        args.extend([
            "--symlink".into(),
            Path::new("orgo").join(name).into(),
            Path::new("/etc").join(name).into(),
        ]);
    }
    Ok(args)
}

/// System calls no desktop needs, refused with EPERM: mounting and pivoting, modules, kexec,
/// BPF, perf, the kernel keyring, new namespaces, handles to host files, reboot, swap, the
/// clock, accounting, quotas, port I/O, userfaultfd.
const DENIED: &[i64] = &[
    nix::libc::SYS_mount,
    nix::libc::SYS_umount2,
    nix::libc::SYS_pivot_root,
    nix::libc::SYS_chroot,
    nix::libc::SYS_fsopen,
    nix::libc::SYS_fsconfig,
    nix::libc::SYS_fsmount,
    nix::libc::SYS_fspick,
    nix::libc::SYS_move_mount,
    nix::libc::SYS_open_tree,
    nix::libc::SYS_mount_setattr,
    nix::libc::SYS_init_module,
    nix::libc::SYS_finit_module,
    nix::libc::SYS_delete_module,
    nix::libc::SYS_kexec_load,
    nix::libc::SYS_kexec_file_load,
    nix::libc::SYS_bpf,
    nix::libc::SYS_perf_event_open,
    nix::libc::SYS_keyctl,
    nix::libc::SYS_add_key,
    nix::libc::SYS_request_key,
    nix::libc::SYS_unshare,
    nix::libc::SYS_setns,
    nix::libc::SYS_open_by_handle_at,
    nix::libc::SYS_name_to_handle_at,
    nix::libc::SYS_reboot,
    nix::libc::SYS_swapon,
    nix::libc::SYS_swapoff,
    nix::libc::SYS_settimeofday,
    nix::libc::SYS_clock_settime,
    nix::libc::SYS_clock_adjtime,
    nix::libc::SYS_adjtimex,
    nix::libc::SYS_acct,
    nix::libc::SYS_quotactl,
    nix::libc::SYS_syslog,
    nix::libc::SYS_userfaultfd,
    nix::libc::SYS_personality,
    #[cfg(target_arch = "x86_64")]
    nix::libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    nix::libc::SYS_ioperm,
];

/// The namespace flags `clone` may not carry.
const NEW_NAMESPACES: &[u64] = &[
    nix::libc::CLONE_NEWUSER as u64,
    nix::libc::CLONE_NEWNS as u64,
    nix::libc::CLONE_NEWNET as u64,
    nix::libc::CLONE_NEWPID as u64,
    nix::libc::CLONE_NEWIPC as u64,
    nix::libc::CLONE_NEWUTS as u64,
    nix::libc::CLONE_NEWCGROUP as u64,
];

/// The desktop's seccomp filters: the refused calls (EPERM), and `clone3`, which passes its
/// flags in memory a filter cannot read, so it answers ENOSYS and libc falls back to `clone`,
/// whose flags are checked. Two programs because one filter has one refusal.
fn seccomp_programs() -> anyhow::Result<[(&'static str, BpfProgram); 2]> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &nr in DENIED {
        rules.insert(nr, Vec::new());
    }
    let clone_rules = NEW_NAMESPACES
        .iter()
        .map(|&flag| {
            SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag)
                .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(nix::libc::SYS_clone, clone_rules);
    let clone3 = BTreeMap::from([(nix::libc::SYS_clone3, Vec::new())]);
    Ok([
        ("denied.bpf", program(rules, nix::libc::EPERM)?),
        ("clone3.bpf", program(clone3, nix::libc::ENOSYS)?),
    ])
}

/// One filter answering `errno` to the calls `rules` match, as the library compiles it.
fn program(mut rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> anyhow::Result<BpfProgram> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| anyhow::anyhow!("no seccomp filter for this architecture: {e:?}"))?;
    // The x32 ABI reaches the same calls with bit 30 set in the number, past any rule for the
    // plain number; refuse those too.
    #[cfg(target_arch = "x86_64")]
    for (nr, chain) in rules.clone() {
        rules.insert(nr | 0x4000_0000, chain);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )?;
    Ok(filter.try_into()?)
}

/// A program as the kernel's `struct sock_filter` array, the form bubblewrap reads.
fn program_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for i in program {
        bytes.extend(i.code.to_ne_bytes());
        bytes.extend([i.jt, i.jf]);
        bytes.extend(i.k.to_ne_bytes());
    }
    bytes
}
