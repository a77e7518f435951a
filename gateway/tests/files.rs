//! A desktop's files over REST on real local desktops: a 1 GiB file streamed in and out of a
//! served gateway process whose memory stays flat, binary content byte-exact, paths confined
//! to the home by the agent (`..`, absolute paths, symlinks leading out: 403 with the reason),
//! directories, deletes, and the plan's size limit (413, the old file kept).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::http::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

mod common;

use common::inproc::Gateway;
use common::{Served, free_port, gateway_env, new_key, scratch};

/// `len` bytes of a fixed pseudo-random sequence, made while read (xorshift64).
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for b in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = self.state as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The SHA-256 of everything `reader` gives, in hex.
fn sha256(mut reader: impl Read) -> (String, u64) {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            return (hex::encode(hash.finalize()), total);
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Samples `pid`'s resident memory every 50 ms while `work` runs: its peak.
fn peak_rss_during<T>(pid: u32, work: impl FnOnce() -> T) -> (T, u64) {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss(pid)));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    let out = work();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    (out, peak.load(Ordering::Relaxed))
}

#[test]
fn a_gigabyte_streams_in_and_out_of_a_desktop_in_little_gateway_memory() {
    let dir = scratch("files-gigabyte");
    let port = free_port();
    let env = gateway_env(&dir, port);
    let key = new_key(&env, "mover", "pro");
    let served = Served::start(&env, port);
    let (_, ws) = served.call(&key, "POST", "/workspaces", Some(json!({"name": "big"})));
    let (status, made) = served.call(
        &key,
        "POST",
        "/computers",
        Some(json!({"workspace_id": ws["id"], "ram": 2, "cpu": 1, "disk_size_gb": 4})),
    );
    assert_eq!(status, 200, "{made}");
    let url = format!(
        "{}/computers/{}/files/content",
        served.base,
        made["id"].as_str().unwrap()
    );
    let auth = format!("Bearer {key}");
    const SIZE: u64 = 1 << 30;
    let noise = || Noise {
        state: 0x9e37_79b9_7f4a_7c15,
        left: SIZE,
    };
    let (expected, _) = sha256(noise());
    let before = rss(served.pid());

    let (answer, peak_in) = peak_rss_during(served.pid(), || {
        let mut body = noise();
        served
            .http
            .put(&format!("{url}?path=big/noise.bin&make_parents=true"))
            .header("Authorization", &auth)
            .send(ureq::SendBody::from_reader(&mut body))
            .unwrap()
            .body_mut()
            .read_json::<serde_json::Value>()
            .unwrap()
    });
    assert_eq!(answer["size"], json!(SIZE), "{answer}");
    let ((read_back, length), peak_out) = peak_rss_during(served.pid(), || {
        let mut response = served
            .http
            .get(&format!("{url}?path=big/noise.bin"))
            .header("Authorization", &auth)
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        sha256(response.body_mut().as_reader())
    });
    assert_eq!(
        (read_back.as_str(), length),
        (expected.as_str(), SIZE),
        "byte-exact both ways"
    );
    let (_, inside) = served.call(
        &key,
        "POST",
        &format!("/computers/{}/bash", made["id"].as_str().unwrap()),
        Some(json!({"command": "sha256sum big/noise.bin"})),
    );
    assert!(
        inside["output"].as_str().unwrap().starts_with(&expected),
        "{inside}"
    );
    // A client that goes away 3 MB into a 10 MB upload: the file stays as it was.
    {
        use std::io::Write;
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let path = format!(
            "/api/computers/{}/files/content?path=big/noise.bin",
            made["id"].as_str().unwrap()
        );
        write!(
            socket,
            "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 10000000\r\n\r\n"
        )
        .unwrap();
        socket.write_all(&vec![b'z'; 3 << 20]).unwrap();
        socket.shutdown(std::net::Shutdown::Both).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (_, after) = served.call(
        &key,
        "POST",
        &format!("/computers/{}/bash", made["id"].as_str().unwrap()),
        Some(json!({"command": "sha256sum big/noise.bin; ls -a big"})),
    );
    let out = after["output"].as_str().unwrap();
    assert!(out.starts_with(&expected), "the old file stays whole: {after}");
    assert_eq!(
        out.lines().filter(|l| l.contains("orgo-upload")).count(),
        0,
        "no partial file left: {out}"
    );
    let grown = peak_in.max(peak_out).saturating_sub(before);
    assert!(
        grown < 50 << 20,
        "the gateway grew by {} MiB moving 1 GiB (from {} MiB)",
        grown >> 20,
        before >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_byte_exact_confined_to_the_home_and_within_the_plan() {
    let gw = Gateway::with("files-confined", |c| {
        c.plans.get_mut("free").unwrap().max_file_mb = 1;
    })
    .await;
    let key = gw.key("owner").await;
    let ws = gw
        .ok("POST", "/api/workspaces", &key, Some(json!({"name": "w"})))
        .await;
    let made = gw
        .ok(
            "POST",
            "/api/computers",
            &key,
            Some(json!({"workspace_id": ws["id"], "ram": 2})),
        )
        .await;
    let c = format!("/api/computers/{}", made["id"].as_str().unwrap());
    let auth = format!("Bearer {key}");
    let send = |method: &'static str, path: String, body: Vec<u8>| {
        let auth = auth.clone();
        let gw = &gw;
        async move { gw.send_raw(method, &path, Some(&auth), body).await }
    };

    // Every byte value, several times over, in and out unchanged; listed and stat'ed.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3 * 256 + 17).collect();
    let (status, _, v) = send(
        "PUT",
        format!("{c}/files/content?path=dir/sub/all.bin&make_parents=true&mode=600"),
        bytes.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["size"], json!(bytes.len()));
    let (status, _, v) = send(
        "GET",
        format!("{c}/files/content?path=dir/sub/all.bin"),
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let raw = v["raw"].as_str().map(|s| s.as_bytes().to_vec());
    assert!(raw.is_some(), "octet-stream answers come back raw");
    let listed = gw.ok("GET", &format!("{c}/files?path=dir/sub"), &key, None).await;
    assert_eq!(
        listed["entries"],
        json!([{"name": "all.bin", "kind": "file", "size": bytes.len(), "mode": "600",
                                          "modified_ms": listed["entries"][0]["modified_ms"]}])
    );
    let stat = gw
        .ok("GET", &format!("{c}/files/stat?path=~/dir"), &key, None)
        .await;
    assert_eq!(stat["kind"], "directory");
    let inside = gw
        .bash(
            &key,
            &c,
            "od -An -tx1 -v dir/sub/all.bin | tr -d ' \\n' | sha256sum",
            None,
        )
        .await;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let (want, _) = sha256(hex.as_bytes());
    assert!(inside["output"].as_str().unwrap().starts_with(&want), "{inside}");

    // Ranges.
    let (_, _, v) = send(
        "GET",
        format!("{c}/files/content?path=dir/sub/all.bin&offset=65&limit=3"),
        Vec::new(),
    )
    .await;
    assert_eq!(v["raw"], json!("ABC"));

    // Confined: nothing outside the home is read, written or removed, whichever way it is named.
    gw.bash(
        &key,
        &c,
        "ln -s /etc etc-link; ln -s /etc/passwd passwd-link; ln -s dir inner-link",
        None,
    )
    .await;
    for (method, query) in [
        ("GET", "files/content?path=../../etc/passwd"),
        ("GET", "files/content?path=/etc/passwd"),
        ("GET", "files/content?path=etc-link/passwd"),
        ("GET", "files/content?path=passwd-link"),
        ("GET", "files?path=etc-link"),
        ("PUT", "files/content?path=etc-link/orgo-escape"),
        ("PUT", "files/content?path=../orgo-escape"),
        ("DELETE", "files?path=etc-link/hostname"),
    ] {
        let (status, _, v) = send(method, format!("{c}/{query}"), b"x".to_vec()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {query}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("outside the home"),
            "{method} {query}: {v}"
        );
    }
    assert!(!std::path::Path::new("/etc/orgo-escape").exists());
    let via_inner = gw
        .ok("GET", &format!("{c}/files?path=inner-link/sub"), &key, None)
        .await;
    assert_eq!(
        via_inner["entries"][0]["name"], "all.bin",
        "a link staying inside works"
    );

    // Over the plan's 1 MiB: refused, nothing written, the old file as it was.
    let (status, _, v) = send(
        "PUT",
        format!("{c}/files/content?path=dir/sub/all.bin"),
        vec![7u8; 2 << 20],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("1 MiB"), "{v}");
    let size = gw
        .ok("GET", &format!("{c}/files/stat?path=dir/sub/all.bin"), &key, None)
        .await;
    assert_eq!(size["size"], json!(bytes.len()));

    // Deletes: a directory only with recursive; then it is gone.
    let (status, _, v) = send("DELETE", format!("{c}/files?path=dir"), Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    gw.ok(
        "DELETE",
        &format!("{c}/files?path=dir&recursive=true"),
        &key,
        None,
    )
    .await;
    let (status, _, v) = send("GET", format!("{c}/files/stat?path=dir"), Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, _, v) = send("PUT", format!("{c}/files/content?path=x&mode=999"), Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}

/// A multipart body of `fields` (name, value) and one `file` part: (its content type, bytes).
fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    const BOUNDARY: &str = "orgo-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    if let Some((filename, bytes)) = file {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
                 Content-Type: application/x-test\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_files_upload_export_list_and_open_by_signed_link() {
    let gw = Gateway::new("files-workspace").await;
    let key = gw.key("owner").await;
    let auth = format!("Bearer {key}");
    let ws = gw
        .ok("POST", "/api/workspaces", &key, Some(json!({"name": "w"})))
        .await;
    let ws_id = ws["id"].as_str().unwrap().to_string();
    let made = gw
        .ok(
            "POST",
            "/api/computers",
            &key,
            Some(json!({"workspace_id": ws_id, "ram": 2})),
        )
        .await;
    let id = made["id"].as_str().unwrap().to_string();
    let c = format!("/api/computers/{id}");

    // Into the computer's Desktop folder and its workspace's files, binary intact.
    let content: Vec<u8> = (0..=255u8).rev().collect();
    let (ctype, body) = multipart(&[], Some(("notes.bin", &content)));
    let (status, _, up) = gw
        .send_typed(
            "POST",
            &format!("{c}/files/upload"),
            Some(&auth),
            Some(&ctype),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{up}");
    assert_eq!(
        (
            up["file"]["filename"].clone(),
            up["file"]["size_bytes"].clone(),
            up["file"]["desktop_id"].clone()
        ),
        (json!("notes.bin"), json!(256), json!(id))
    );
    let inside = gw
        .bash(
            &key,
            &c,
            "od -An -tu1 -v Desktop/notes.bin | wc -w; head -c1 Desktop/notes.bin | od -An -tu1",
            None,
        )
        .await;
    assert_eq!(
        inside["output"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["256", "255"]
    );

    // More than one gRPC message's worth (4 MiB), whole.
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let (ctype, body) = multipart(&[], Some(("big.bin", &big)));
    let (status, _, up) = gw
        .send_typed(
            "POST",
            &format!("{c}/files/upload"),
            Some(&auth),
            Some(&ctype),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{up}");
    let size = gw.bash(&key, &c, "stat -c %s Desktop/big.bin", None).await;
    assert_eq!(size["output"], "5000000\n");

    // Into the workspace only; listed per workspace and per desktop.
    let (ctype, body) = multipart(&[("projectId", &ws_id)], Some(("plan.txt", b"the plan")));
    let (status, _, plan) = gw
        .send_typed("POST", "/api/files/upload", Some(&auth), Some(&ctype), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let all = gw
        .ok("GET", &format!("/api/files?projectId={ws_id}"), &key, None)
        .await;
    assert_eq!(all["files"].as_array().unwrap().len(), 3);
    let mine = gw
        .ok(
            "GET",
            &format!("/api/files?projectId={ws_id}&desktopId={id}"),
            &key,
            None,
        )
        .await;
    let mut names: Vec<_> = mine["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["big.bin", "notes.bin"]);
    let (ctype, body) = multipart(
        &[("projectId", &ws_id)],
        Some(("big.bin", &vec![0u8; (10 << 20) + 1])),
    );
    let (status, _, v) = gw
        .send_typed("POST", "/api/files/upload", Some(&auth), Some(&ctype), body)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let (ctype, body) = multipart(&[("projectId", &ws_id)], Some(("../up", b"x")));
    let (status, _, v) = gw
        .send_typed("POST", "/api/files/upload", Some(&auth), Some(&ctype), body)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    // Exported from the desktop's home, opened by its signed link without the API key.
    gw.bash(&key, &c, "printf exported > out.txt", None).await;
    let exported = gw
        .ok(
            "POST",
            "/api/files/export",
            &key,
            Some(json!({"desktopId": id, "path": "~/out.txt"})),
        )
        .await;
    assert_eq!(
        (
            exported["file"]["source"].clone(),
            exported["file"]["size_bytes"].clone()
        ),
        (json!("export"), json!(8))
    );
    let url = exported["url"].as_str().unwrap();
    let link = &url[url.find("/api/").unwrap()..];
    let (status, headers, v) = gw.send_raw("GET", link, None, Vec::new()).await;
    assert_eq!((status, v["raw"].clone()), (StatusCode::OK, json!("exported")));
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("out.txt")
    );
    let tampered = link.replace("token=", "token=x");
    assert_eq!(
        gw.send_raw("GET", &tampered, None, Vec::new()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let other = format!(
        "/api/files/{}/content?{}",
        plan["file"]["id"].as_str().unwrap(),
        link.split_once('?').unwrap().1
    );
    assert_eq!(
        gw.send_raw("GET", &other, None, Vec::new()).await.0,
        StatusCode::UNAUTHORIZED,
        "a link opens its own file only"
    );
    let (status, _, v) = gw
        .send_raw(
            "POST",
            "/api/files/export",
            Some(&auth),
            json!({"desktopId": id, "path": "/etc/passwd"})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");

    // A fresh link by id; a deleted file's link opens nothing; another account sees nothing.
    let plan_id = plan["file"]["id"].as_str().unwrap();
    let fresh = gw
        .ok("GET", &format!("/api/files/download?id={plan_id}"), &key, None)
        .await;
    let fresh = fresh["url"].as_str().unwrap();
    let fresh = &fresh[fresh.find("/api/").unwrap()..];
    assert_eq!(
        gw.send_raw("GET", fresh, None, Vec::new()).await.2["raw"],
        "the plan"
    );
    let stranger = gw.key("stranger").await;
    let (status, v) = gw
        .send(
            "GET",
            &format!("/api/files/download?id={plan_id}"),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    gw.ok("DELETE", &format!("/api/files/{plan_id}"), &key, None)
        .await;
    assert_eq!(
        gw.send_raw("GET", fresh, None, Vec::new()).await.0,
        StatusCode::NOT_FOUND
    );

    // A workspace's files go with it.
    gw.ok("DELETE", &format!("/api/workspaces/{ws_id}"), &key, None)
        .await;
    let (status, _) = gw
        .send("GET", &format!("/api/files?projectId={ws_id}"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let gone = gw
        .state
        .store
        .file(
            &gw.state.store.account_by_name("owner").await.unwrap().unwrap().id,
            exported["file"]["id"].as_str().unwrap(),
        )
        .await
        .unwrap();
    assert!(gone.is_none(), "deleted with its workspace");
}
