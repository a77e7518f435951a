//! The local runtime's sandbox, probed from inside real desktops of a real gateway process
//! (running as whoever runs the tests; root in CI): who the desktop's code is, every way out
//! that must fail (host files, other desktops, the host's loopback and the gateway's port,
//! devices, mounts, the firewall, cgroups, signals, namespaces, modules), and everything a
//! desktop is for that must still work (exec, screenshots, typing into xterm, pip, a loopback
//! server, outbound TCP, a headless browser). Also: a gateway run as nobody sandboxes as well
//! or says why it cannot, and a machine without slirp4netns refuses the runtime with the
//! package to install.

use serde_json::json;

mod common;

use common::{Served, free_port, gateway_env, new_key};

/// A served gateway on a fresh data dir with keys for `accounts`.
fn gateway(
    tag: &str,
    extra: &[(&'static str, &str)],
    accounts: &[&str],
) -> (Served, Vec<String>, std::path::PathBuf, u16) {
    let dir = common::scratch(tag);
    let port = free_port();
    let mut env = gateway_env(&dir, port);
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let keys = accounts.iter().map(|a| new_key(&env, a, "free")).collect();
    (Served::start(&env, port), keys, dir, port)
}

/// A new desktop of `key`: (computer path, desktop id).
fn desktop(gw: &Served, key: &str) -> (String, String) {
    let (status, p) = gw.call(
        key,
        "POST",
        "/projects",
        Some(json!({"config": {"ram": 2, "cpu": 2}})),
    );
    assert_eq!(status, 200, "{p}");
    (
        format!("/computers/{}", p["name"].as_str().unwrap()),
        p["desktop"]["id"].as_str().unwrap().to_string(),
    )
}

/// `command` in the desktop's bash: (output, exit code).
fn bash(gw: &Served, key: &str, computer: &str, command: &str) -> (String, i64) {
    let (status, v) = gw.call(
        key,
        "POST",
        &format!("{computer}/bash"),
        Some(json!({"command": format!("export PATH=$PATH:/usr/sbin:/sbin; {command}"), "timeout": 60})),
    );
    assert_eq!(status, 200, "{command}: {v}");
    (
        v["output"].as_str().unwrap_or_default().to_string(),
        v["exit_code"].as_i64().unwrap_or(-1),
    )
}

/// A Python one-liner that exits 0 only if it can open a TCP connection to `host:port`.
fn tcp_probe(host: &str, port: u16) -> String {
    format!("python3 -c 'import socket; socket.create_connection((\"{host}\", {port}), timeout=5)'")
}

/// The identity inside: an unprivileged `user` without capabilities, `no_new_privs`, filtered.
fn check_identity(gw: &Served, key: &str, c: &str) {
    let (out, _) = bash(
        gw,
        key,
        c,
        "id -un; id -u; echo $HOME; grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status",
    );
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "user",
            "1000",
            "/home/user",
            "CapInh: 0000000000000000",
            "CapPrm: 0000000000000000",
            "CapEff: 0000000000000000",
            "CapBnd: 0000000000000000",
            "CapAmb: 0000000000000000",
            "NoNewPrivs: 1",
            "Seccomp: 2",
        ],
        "{out}"
    );
    // The filter itself answers: EPERM for what no desktop needs, ENOSYS for clone3 (so libc
    // falls back to clone, whose flags the filter reads).
    let (out, _) = bash(
        gw,
        key,
        c,
        "python3 -c '
import ctypes
l = ctypes.CDLL(None, use_errno=True)
def errno(r):
    return ctypes.get_errno() if r == -1 else 0
print(errno(l.unshare(0x10000000)), errno(l.mount(b\"none\", b\"/tmp\", b\"tmpfs\", 0, None)),
      errno(l.syscall(435, None, 0)), errno(l.umount2(b\"/tmp\", 0)))'",
    );
    assert_eq!(out.trim(), "1 1 38 1", "unshare, mount, clone3, umount2 errnos");
}

#[test]
fn nothing_gets_out_of_a_local_desktop() {
    let (gw, keys, dir, port) = gateway("sandbox", &[("ORGO_DISK_SIZE_GB", "1")], &["alice", "bob"]);
    let (alice, bob) = (&keys[0], &keys[1]);
    let (a, a_id) = desktop(&gw, alice);
    let (b, b_id) = desktop(&gw, bob);
    check_identity(&gw, alice, &a);

    // The desktop is in its cgroups, seen from the host.
    assert!(
        !common::desktop_pids(&a_id, "orgo-agent").is_empty(),
        "the agent is in its cgroup"
    );

    // Bob's desktop has a file, a process and a socket alice must not see.
    let (_, rc) = bash(
        &gw,
        bob,
        &b,
        "echo secret > ~/bob-secret && (setsid sleep 4242 >/dev/null 2>&1 </dev/null &)",
    );
    assert_eq!(rc, 0);
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    let bob_dir = dir.join("desktops").join(&b_id);
    let gateway_pid = gw.pid();
    let probes: Vec<(&str, String)> = vec![
        ("read /etc/shadow", "cat /etc/shadow".into()),
        ("list /root", "ls /root".into()),
        ("list the checkout", format!("ls {}", env!("CARGO_MANIFEST_DIR"))),
        ("see the host's /home", "ls -A /home | grep -vx user".into()),
        ("list /srv, /opt or /var/lib", "ls /srv || ls /opt || ls /var/lib".into()),
        // Only its own cgroups are there (read-only, where a container sees them).
        ("see the host's /sys", "ls -A /sys | grep -vx fs || ls -A /sys/fs | grep -vx cgroup".into()),
        ("see other desktops' cgroups", "ls -d /sys/fs/cgroup/orgo /sys/fs/cgroup/*/orgo".into()),
        ("see the data dir", format!("ls {}", dir.display())),
        ("see another desktop's home", format!("ls {0}/home || grep -r secret /home /tmp", bob_dir.display())),
        (
            "see another desktop's socket",
            "find / \\( -path /proc -o -path /sys \\) -prune -o -name agent.sock -print 2>/dev/null | grep -vx /run/orgo/agent.sock".into(),
        ),
        ("see another desktop's processes", "ps -eo args | grep '[s]leep 4242'".into()),
        ("see the gateway's process", "ps -eo args | grep '[o]rgo-gateway'".into()),
        (
            "signal the gateway",
            format!("kill -0 {gateway_pid} && ps -p {gateway_pid} -o args= | grep orgo-gateway"),
        ),
        ("connect to the gateway's port", tcp_probe("127.0.0.1", port)),
        ("connect to the gateway through the host alias", tcp_probe("10.0.2.2", port)),
        ("connect to a server on the host's loopback", tcp_probe("127.0.0.1", host_port)),
        ("connect to it through the host alias", tcp_probe("10.0.2.2", host_port)),
        (
            "reach the Docker socket",
            "python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(\"/run/docker.sock\")' \
             || python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.connect(\"/var/run/docker.sock\")'"
                .into(),
        ),
        ("mknod a block device", "mknod /tmp/sda b 8 0".into()),
        ("mount a tmpfs", "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m".into()),
        ("mount /proc again", "mkdir -p /tmp/p && mount -t proc proc /tmp/p".into()),
        ("list the firewall", "iptables -L".into()),
        ("add a link", "ip link add probe0 type dummy".into()),
        (
            "write a cgroup file",
            "for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/pids/cgroup.procs; do echo $$ > $f && exit 0; done; exit 1"
                .into(),
        ),
        (
            "raise its own memory limit",
            "echo max > /sys/fs/cgroup/memory.max || echo -1 > /sys/fs/cgroup/memory/memory.limit_in_bytes".into(),
        ),
        ("unshare a user namespace", "unshare -U true".into()),
        ("unshare a network namespace as mapped root", "unshare -rn true".into()),
        ("load a module", "modprobe dummy || insmod /nonexistent.ko".into()),
        ("read the kernel log", "dmesg".into()),
        ("set the clock", "date -s @0".into()),
        ("become root", "su -c true || sudo true".into()),
        // Every descriptor a desktop's process holds is its own: none to the gateway's log, to
        // a host directory or to a file outside what the sandbox shows.
        (
            "hold a host file open",
            "for f in /proc/[0-9]*/fd/*; do readlink $f; done 2>/dev/null | grep '^/' \
             | grep -v -e '^/dev/' -e '^/home/user' -e '^/tmp' -e '^/proc/' -e '^/run/orgo' -e '^/usr/' -e '^/etc/'"
                .into(),
        ),
        // The home is 1 GiB and /tmp 1 GiB: neither fills the gateway's disk.
        ("fill the home", "dd if=/dev/zero of=~/fill bs=1M count=1200 status=none; s=$?; rm -f ~/fill; exit $s".into()),
        ("fill /tmp", "dd if=/dev/zero of=/tmp/fill bs=1M count=1200 status=none; s=$?; rm -f /tmp/fill; exit $s".into()),
        ("fill the run dir", "dd if=/dev/zero of=/run/orgo/fill bs=1M count=100 status=none; s=$?; rm -f /run/orgo/fill; exit $s".into()),
    ];
    let mut escaped = Vec::new();
    for (what, command) in &probes {
        let (out, rc) = bash(&gw, alice, &a, command);
        if rc == 0 {
            escaped.push(format!("{what} ({command}): {out}"));
        }
    }
    assert!(escaped.is_empty(), "got out of the desktop: {escaped:#?}");

    // Seen from the host, a root gateway's desktops are two distinct unprivileged users.
    if nix::unistd::geteuid().is_root() {
        let uid_of = |id: &str| {
            let pid = common::desktop_pids(id, "orgo-agent")[0];
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .unwrap()
                .to_string();
            line.split_whitespace().nth(1).unwrap().parse::<u32>().unwrap()
        };
        let (a_uid, b_uid) = (uid_of(&a_id), uid_of(&b_id));
        assert!(
            a_uid >= 1 << 16 && b_uid >= 1 << 16 && a_uid != b_uid,
            "{a_uid} {b_uid}"
        );
    }

    // Killing everything it may signal kills the desktop's own processes only.
    let _ = gw.call(
        alice,
        "POST",
        &format!("{a}/bash"),
        Some(json!({"command": "kill -9 -1"})),
    );
    let (out, rc) = bash(&gw, bob, &b, "cat ~/bob-secret && pgrep -c -x sleep");
    assert_eq!((out.as_str(), rc), ("secret\n1\n", 0), "the neighbour lives on");
}

/// Whether `path` is a mount point in this process's mount namespace.
fn is_mounted(path: &std::path::Path) -> bool {
    let p = path.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p))
}

/// slirp4netns' own sandbox makes only its root mount private before it detaches the old root,
/// so a shared mount whose parent is shared too (systemd's default everywhere; every
/// kubelet's volumes) was unmounted on the host as well.
#[test]
fn starting_a_desktop_leaves_the_hosts_shared_mounts_alone() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only a root gateway runs slirp4netns' own sandbox");
        return;
    }
    let outer = common::scratch("sandbox-shared-mount").join("outer");
    let inner = outer.join("inner");
    let mount = |args: &[&str]| {
        let status = std::process::Command::new("mount").args(args).status().unwrap();
        assert!(status.success(), "mount {args:?}");
    };
    std::fs::create_dir_all(&outer).unwrap();
    mount(&["-t", "tmpfs", "probe", outer.to_str().unwrap()]);
    mount(&["--make-shared", outer.to_str().unwrap()]);
    std::fs::create_dir_all(&inner).unwrap();
    mount(&["-t", "tmpfs", "probe", inner.to_str().unwrap()]);
    let (gw, keys, _dir, _) = gateway("sandbox-shared", &[], &["alice"]);
    let (c, _) = desktop(&gw, &keys[0]);
    let (out, rc) = bash(&gw, &keys[0], &c, "echo up");
    let still = is_mounted(&inner);
    let _ = std::process::Command::new("umount")
        .arg("-R")
        .arg(&outer)
        .status();
    assert_eq!((out.as_str(), rc), ("up\n", 0));
    assert!(
        still,
        "starting a desktop unmounted the host's shared mount {}",
        inner.display()
    );
}

#[test]
fn a_local_desktop_still_does_its_work() {
    let (gw, keys, _dir, _) = gateway("sandbox-works", &[], &["alice"]);
    let key = &keys[0];
    let (c, _) = desktop(&gw, key);

    // Python through /exec, and a screenshot.
    let (status, v) = gw.call(
        key,
        "POST",
        &format!("{c}/exec"),
        Some(json!({"code": "print(6 * 7)"})),
    );
    assert_eq!((status, v["output"].as_str()), (200, Some("42\n")), "{v}");
    let (status, v) = gw.call(key, "GET", &format!("{c}/screenshot"), None);
    assert_eq!(status, 200);
    assert!(v["image"].as_str().is_some_and(|i| i.len() > 1000), "{v}");

    // Typing into an xterm (non-ASCII too), recorded by the program in it. Keys go to the focused
    // window, so wait until the xterm is on screen and has the focus: typed earlier, they go nowhere.
    let (_, rc) = bash(
        &gw,
        key,
        &c,
        "setsid xterm -geometry 60x20+0+0 -e 'cat > ~/typed' >/dev/null 2>&1 </dev/null & \
         xdotool search --sync --onlyvisible --class xterm windowfocus --sync >/dev/null",
    );
    assert_eq!(rc, 0);
    let (status, v) = gw.call(
        key,
        "POST",
        &format!("{c}/type"),
        Some(json!({"text": "héllo sandbox"})),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = gw.call(key, "POST", &format!("{c}/key"), Some(json!({"key": "Enter"})));
    assert_eq!(status, 200, "{v}");
    let (typed, _) = bash(
        &gw,
        key,
        &c,
        "for i in $(seq 100); do grep -q sandbox ~/typed 2>/dev/null && break; sleep 0.1; done; cat ~/typed",
    );
    assert_eq!(typed, "héllo sandbox\n");

    // pip installs a local wheel for the user.
    let (out, rc) = bash(
        &gw,
        key,
        &c,
        r#"cd /tmp && python3 -c '
import zipfile
with zipfile.ZipFile("probe-1.0-py3-none-any.whl", "w") as w:
    w.writestr("probe.py", "VALUE = 7\n")
    w.writestr("probe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: probe\nVersion: 1.0\n")
    w.writestr("probe-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    w.writestr("probe-1.0.dist-info/RECORD", "")
' && python3 -m pip install -q --user --no-index --break-system-packages probe-1.0-py3-none-any.whl \
  && cd && python3 -c 'import probe; print(probe.VALUE)'"#,
    );
    assert_eq!((out.lines().last(), rc), (Some("7"), 0), "{out}");

    // A server inside talks to itself over loopback.
    let (out, rc) = bash(
        &gw,
        key,
        &c,
        "(setsid python3 -m http.server 8765 --bind 127.0.0.1 >/dev/null 2>&1 </dev/null &); \
         for i in $(seq 100); do python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:8765/\").status)' 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
    );
    assert_eq!((out.trim(), rc), ("200", 0), "{out}");

    // Outbound TCP: to a server on an address of this machine other than loopback, and to one
    // in a network namespace of its own (where the test may make one).
    match outside_address() {
        Some(ip) => {
            let listener = std::net::TcpListener::bind((ip.as_str(), 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            let (out, rc) = bash(&gw, key, &c, &tcp_probe(&ip, port));
            assert_eq!(rc, 0, "outbound to {ip}:{port}: {out}");
        }
        None => eprintln!("skipped outbound TCP: this machine has no address but loopback"),
    }
    match Elsewhere::serve() {
        Some(server) => {
            let (out, rc) = bash(
                &gw,
                key,
                &c,
                &format!(
                    "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://{}:{}/\", timeout=10).status)'",
                    server.address, server.port
                ),
            );
            assert_eq!(
                (out.trim(), rc),
                ("200", 0),
                "outbound to another network namespace"
            );
        }
        None => eprintln!("skipped outbound TCP to a network namespace: only root may make one"),
    }

    // Debian's Chromium runs headless inside (its own sandbox off: the desktop's is stricter).
    if std::path::Path::new("/usr/bin/chromium").exists() {
        let (out, rc) = bash(
            &gw,
            key,
            &c,
            "chromium --headless --no-sandbox --disable-gpu --dump-dom 'data:text/html,<p>inside</p>' 2>/dev/null",
        );
        assert!(rc == 0 && out.contains("<p>inside</p>"), "{rc}: {out}");
    } else {
        eprintln!("skipped chromium: not installed");
    }
}

/// An HTTP server in a network namespace this test makes, joined to the host by a veth pair:
/// somewhere outside the desktop that is neither the host's loopback nor its own address.
struct Elsewhere {
    namespace: String,
    address: String,
    port: u16,
    server: std::process::Child,
}

impl Elsewhere {
    /// Root only; `None` otherwise.
    fn serve() -> Option<Elsewhere> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let n = std::process::id() % 250 + 1;
        let namespace = format!("orgo-probe-{}", std::process::id());
        let (host_end, far_end) = (format!("opa{n}"), format!("opb{n}"));
        let (host_ip, address) = (format!("10.231.{n}.1"), format!("10.231.{n}.2"));
        let ip = |args: &str| {
            let status = std::process::Command::new("ip")
                .args(args.split_whitespace())
                .status()
                .unwrap();
            assert!(status.success(), "ip {args}");
        };
        ip(&format!("netns add {namespace}"));
        ip(&format!(
            "link add {host_end} type veth peer name {far_end} netns {namespace}"
        ));
        ip(&format!("addr add {host_ip}/30 dev {host_end}"));
        ip(&format!("link set {host_end} up"));
        ip(&format!("-n {namespace} addr add {address}/30 dev {far_end}"));
        ip(&format!("-n {namespace} link set {far_end} up"));
        let port = 8000 + (std::process::id() % 1000) as u16;
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", &namespace, "python3", "-m", "http.server"])
            .args(["--bind", &address, &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let served = Elsewhere {
            namespace,
            address,
            port,
            server,
        };
        let target = format!("{}:{}", served.address, served.port).parse().unwrap();
        while std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(1)).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(served)
    }
}

impl Drop for Elsewhere {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // Deleting the namespace deletes both ends of the pair.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

/// An IPv4 address of this machine other than loopback, if it has one.
fn outside_address() -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = text.lines().next()?.split_whitespace().nth(3)?.to_string();
    Some(field.split('/').next()?.to_string())
}

#[test]
fn without_slirp4netns_the_local_runtime_refuses_to_start() {
    // A PATH with everything the gateway needs but slirp4netns.
    let bin = common::scratch("sandbox-path");
    for program in ["bwrap", "sh"] {
        let found = which(program);
        std::os::unix::fs::symlink(found, bin.join(program)).unwrap();
    }
    let dir = common::scratch("sandbox-refused");
    let mut env = gateway_env(&dir, free_port());
    env.push(("PATH", bin.to_str().unwrap().to_string()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orgo-gateway"))
        .arg("serve")
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without slirp4netns");
    assert!(
        stderr.contains("needs slirp4netns") && stderr.contains("apt-get install slirp4netns"),
        "{stderr}"
    );
}

#[test]
fn the_none_mode_is_open_only_when_asked_for() {
    let (gw, keys, _dir, _) = gateway("sandbox-none", &[("ORGO_LOCAL_SANDBOX", "none")], &["alice"]);
    let (c, _) = desktop(&gw, &keys[0]);
    let (out, _) = bash(&gw, &keys[0], &c, "id -u");
    let me = String::from_utf8(
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(out, me, "none runs desktops as the gateway's user");
}

fn which(program: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed"))
}

/// A gateway run as an ordinary user (nobody) sandboxes its desktops the same way, or, where the
/// machine does not let that user make namespaces or open the tun device, refuses to start the
/// runtime saying which. Only a root test run can switch users.
#[test]
fn an_unprivileged_gateway_sandboxes_as_well_or_says_why_not() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the tests run as an ordinary user already");
        return;
    }
    let dir = common::scratch("sandbox-nobody");
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let port = free_port();
    let mut env = gateway_env(&dir, port);
    env.push(("ORGO_DISK_SIZE_GB", "1".to_string()));
    let gateway = env!("CARGO_BIN_EXE_orgo-gateway");
    let as_nobody = |args: &[&str]| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", gateway])
            .args(args)
            .envs(env.iter().cloned());
        cmd
    };
    let out = as_nobody(&["keys", "create", "--account", "nobody"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let mut child = as_nobody(&["serve"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Serving, or refused at start with the reason.
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            assert!(!status.success());
            assert!(
                [
                    "/dev/net/tun",
                    "/dev/fuse",
                    "user.max_user_namespaces",
                    "apt-get install"
                ]
                .iter()
                .any(|why| stderr.contains(why)),
                "refused without saying why: {stderr}"
            );
            eprintln!("this machine refuses an unprivileged sandbox: {stderr}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let gw = Served::attach(child, port);
    let (c, _) = desktop(&gw, &key);
    check_identity(&gw, &key, &c);
    let (out, rc) = bash(&gw, &key, &c, &tcp_probe("127.0.0.1", port));
    assert_ne!(rc, 0, "reached the gateway's port: {out}");
    // Its homes are checked: a desktop whose home grows past its limit is stopped, and once
    // started again may delete what is too much.
    // The check may stop it before `dd` ends: then the call says it stopped while it ran.
    let (status, v) = gw.call(
        &key,
        "POST",
        &format!("{c}/bash"),
        Some(json!({"command": "dd if=/dev/zero of=~/fill bs=1M count=1200 status=none", "timeout": 60})),
    );
    assert!(
        (status == 200 && v["exit_code"] == 0)
            || (status == 409
                && v["error"]
                    .as_str()
                    .unwrap()
                    .contains("stopped while this call ran")),
        "{status} {v}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        let (status, _) = gw.call(
            &key,
            "POST",
            &format!("{c}/bash"),
            Some(json!({"command": "true"})),
        );
        if status != 200 || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(status, 409, "still running with 1.2 GB in a 1 GiB home");
    let (status, v) = gw.call(&key, "POST", &format!("{c}/start"), None);
    assert_eq!(status, 200, "{v}");
    let (out, rc) = bash(&gw, &key, &c, "rm ~/fill && echo gone");
    assert_eq!((out.as_str(), rc), ("gone\n", 0));
}
