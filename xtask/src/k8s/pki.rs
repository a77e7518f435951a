//! The test cluster's credentials under `pki/`: an openssl CA, the API server's serving
//! certificate, its client certificate for the kubelets, the service-account key pair, the static
//! token file, and the kubeconfigs built from them. Made once and kept across `down`, so a
//! kubeconfig handed to a test stays valid over restarts.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::build::path;
use super::{CLUSTER, HOST_IP, KUBECONFIG};
use crate::system::output;

/// Every name and address the API server is reached by: loopback (the admin kubeconfig), the
/// host's bridge address (kubelets and Pods in the node namespaces), and the `kubernetes`
/// Service's first IP of 10.96.0.0/16 and names, which in-cluster clients would use.
const SERVING_NAMES: &str = "IP:127.0.0.1,IP:10.250.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,\
    DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local";

pub fn dir() -> PathBuf {
    Path::new(CLUSTER).join("pki")
}

pub fn file(name: &str) -> String {
    dir().join(name).display().to_string()
}

/// Makes whatever of the credentials is missing (all of them when the CA is), then writes the
/// admin kubeconfig and the nodes'.
pub fn ensure(nodes: &[&str]) -> Result<()> {
    let pki = dir();
    std::fs::create_dir_all(&pki)?;
    // Keys and the admin's token: root's alone.
    std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o700))?;
    let complete = [
        "ca.crt",
        "apiserver.crt",
        "kubelet-client.crt",
        "sa.key",
        "sa.pub",
        "tokens.csv",
    ]
    .iter()
    .all(|f| pki.join(f).exists());
    if !complete {
        create(&pki, nodes)?;
    }
    let server = "https://127.0.0.1:6443";
    kubeconfig(Path::new(KUBECONFIG), server, &token("admin")?)?;
    for node in nodes {
        let user = format!("system:node:{node}");
        let node_server = format!("https://{HOST_IP}:6443");
        kubeconfig(
            &Path::new(CLUSTER).join(node).join("kubeconfig"),
            &node_server,
            &token(&user)?,
        )?;
    }
    Ok(())
}

fn create(pki: &Path, nodes: &[&str]) -> Result<()> {
    let file = |name: &str| pki.join(name).display().to_string();
    // `output`, not `run`: openssl 3.0 cannot be told to keep its key generation progress quiet.
    let openssl = |args: &[&str]| output("openssl", args).map(drop);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &file("ca.key"),
        "-out",
        &file("ca.crt"),
        "-days",
        "3650",
        "-subj",
        "/CN=orgo-k8s-ca",
    ])?;
    let sign = |name: &str, subject: &str, extensions: &str| -> Result<()> {
        let ext = file(&format!("{name}.ext"));
        let csr = file(&format!("{name}.csr"));
        std::fs::write(&ext, extensions)?;
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &file(&format!("{name}.key")),
            "-out",
            &csr,
            "-subj",
            subject,
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &file("ca.crt"),
            "-CAkey",
            &file("ca.key"),
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            &ext,
            "-out",
            &file(&format!("{name}.crt")),
        ])?;
        std::fs::remove_file(&csr)?;
        std::fs::remove_file(&ext)?;
        Ok(())
    };
    sign(
        "apiserver",
        "/CN=kube-apiserver",
        &format!("subjectAltName={SERVING_NAMES}\nextendedKeyUsage=serverAuth\n"),
    )?;
    // The API server's identity towards the kubelets (logs, exec), which trust this CA.
    sign(
        "kubelet-client",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "extendedKeyUsage=clientAuth\n",
    )?;
    openssl(&["genrsa", "-out", &file("sa.key"), "2048"])?;
    openssl(&["rsa", "-in", &file("sa.key"), "-pubout", "-out", &file("sa.pub")])?;
    // Static tokens (`--token-auth-file`: token,user,uid,"groups"). The kubelets get real node
    // identities (system:node:NAME in system:nodes), so the Node authorizer and NodeRestriction
    // confine each to its own node's objects as in a real cluster.
    let mut tokens = format!("{},admin,admin,\"system:masters\"\n", random_token()?);
    for node in nodes {
        let user = format!("system:node:{node}");
        tokens.push_str(&format!("{},{user},{user},\"system:nodes\"\n", random_token()?));
    }
    std::fs::write(pki.join("tokens.csv"), tokens)?;
    std::fs::set_permissions(pki.join("tokens.csv"), std::fs::Permissions::from_mode(0o600))?;
    eprintln!(
        "xtask: made the cluster's CA, certificates and tokens in {}",
        pki.display()
    );
    Ok(())
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token of `user` in the token file.
fn token(user: &str) -> Result<String> {
    let tokens = std::fs::read_to_string(dir().join("tokens.csv"))?;
    tokens
        .lines()
        .find_map(|l| {
            let mut fields = l.split(',');
            let token = fields.next()?;
            (fields.next()? == user).then(|| token.to_string())
        })
        .with_context(|| format!("no token for {user} in tokens.csv"))
}

/// A kubeconfig for `server` with the CA inline, so the file can be copied on its own.
fn kubeconfig(file: &Path, server: &str, token: &str) -> Result<()> {
    let ca = output("base64", &["-w0", path(&dir().join("ca.crt"))?])?;
    std::fs::create_dir_all(file.parent().context("kubeconfig has no parent")?)?;
    std::fs::write(
        file,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: orgo-k8s
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: orgo-k8s
  user:
    token: {token}
contexts:
- name: orgo-k8s
  context:
    cluster: orgo-k8s
    user: orgo-k8s
    namespace: default
current-context: orgo-k8s
"
        ),
    )?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}
