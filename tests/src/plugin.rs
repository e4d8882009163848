//! Helpers for the `kubectl ste` tests: running the plugin (directly or
//! through the real `kubectl`) in an isolated environment, and a small fake
//! Kubernetes API server (canned JSON answers, recorded requests, and a
//! working `pods/portforward` that relays to a real TCP address), since
//! kube-apiserver cannot run here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::procs::workspace_bin;

/// The outcome of one run of the plugin or kubectl.
#[derive(Debug, Clone)]
pub struct Run {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Panics with the whole run unless it exited 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        self
    }

    /// Panics with the whole run unless it exited 1.
    pub fn failed(self) -> Run {
        assert_eq!(self.code, Some(1), "expected exit 1: {self:#?}");
        self
    }
}

/// A temp dir with `bin/` (symlinks `kubectl-ste` and
/// `kubectl_complete-ste` to the built binaries, for PATH) and an empty
/// `home/`. Commands run with HOME there and without KUBECONFIG,
/// STE_ROUTER, STE_ROUTER_CA and NO_COLOR from the test's environment
/// (plus the variables given to [`Plugin::with_env`]).
pub struct Plugin {
    dir: TempDir,
    env: Vec<(String, String)>,
}

/// The kubeconfig user of the `ste-local` context: what the plugin
/// presents to the router.
#[derive(Debug, Clone, Copy)]
pub enum KubeUser<'a> {
    /// No credentials.
    Anonymous,
    /// A client certificate and key (files).
    Certificate { cert: &'a Path, key: &'a Path },
    /// A bearer token.
    Token(&'a str),
}

impl KubeUser<'_> {
    /// The value of `user:` in a kubeconfig's users entry, from after
    /// `user:` (indented by four).
    fn yaml(&self) -> String {
        match self {
            KubeUser::Anonymous => " {}".to_owned(),
            KubeUser::Certificate { cert, key } => format!(
                "\n    client-certificate: {}\n    client-key: {}",
                cert.display(),
                key.display()
            ),
            KubeUser::Token(token) => format!("\n    token: {token}"),
        }
    }
}

impl Plugin {
    pub fn new() -> anyhow::Result<Plugin> {
        let dir = tempfile::Builder::new()
            .prefix("ste-test-plugin-")
            .tempdir()?;
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin)?;
        std::fs::create_dir(dir.path().join("home"))?;
        for name in ["kubectl-ste", "kubectl_complete-ste"] {
            std::os::unix::fs::symlink(workspace_bin(name), bin.join(name))?;
        }
        Ok(Plugin {
            dir,
            env: Vec::new(),
        })
    }

    /// A plugin whose `~/.kube/config` is the local cluster's for `router`
    /// (see [`local_kubeconfig`]): the router's user address, its CA, and
    /// the test PKI's admin certificate (CN=ste-test-admin, which a router
    /// without Kubernetes lets do everything). `--router` still needs no
    /// more than the address.
    pub fn for_router(router: &crate::TestRouter) -> anyhow::Result<Plugin> {
        let plugin = Plugin::new()?;
        let (cert, key) = plugin.admin_identity()?;
        let dot_kube = plugin.home().join(".kube");
        std::fs::create_dir_all(&dot_kube)?;
        std::fs::write(
            dot_kube.join("config"),
            local_kubeconfig(
                "https://127.0.0.1:1",
                &router.user.to_string(),
                &router.ca_file(),
                KubeUser::Certificate {
                    cert: &cert,
                    key: &key,
                },
            ),
        )?;
        Ok(plugin)
    }

    /// Every command of this plugin runs with `key=value` in its
    /// environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Plugin {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Writes the test PKI's STE CA into the temp dir and returns its path.
    pub fn ste_ca(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join("ste-ca.crt");
        crate::pki::ste().ca.write(&path)?;
        Ok(path)
    }

    /// Writes the test PKI's admin client certificate and key into the
    /// temp dir and returns their paths.
    pub fn admin_identity(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        crate::pki::ste().admin.write(self.dir.path(), "admin")
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Writes `text` to a file in the temp dir and returns its path.
    pub fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// `program` (stdin closed, stdout and stderr piped, killed on drop)
    /// with PATH, HOME and the environment set up as described on
    /// [`Plugin`].
    pub fn command(&self, program: &Path) -> tokio::process::Command {
        // The built plugin first; directories holding another kubectl-ste
        // (e.g. /usr/local/bin after `scripts/local-cluster.sh up`) left out,
        // or kubectl warns that one overshadows the other and `plugin list`
        // exits 1.
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.bin_dir()];
        paths.extend(std::env::split_paths(&path).filter(|dir| {
            !dir.join("kubectl-ste").exists() && !dir.join("kubectl_complete-ste").exists()
        }));
        let mut command = tokio::process::Command::new(program);
        command
            .env("PATH", std::env::join_paths(paths).expect("PATH"))
            .env("HOME", self.home())
            .env_remove("KUBECONFIG")
            .env_remove("STE_ROUTER")
            .env_remove("STE_ROUTER_CA")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Runs `command` to the end (at most 120 s).
    pub async fn output(mut command: tokio::process::Command) -> anyhow::Result<Run> {
        let started = Instant::now();
        let output = tokio::time::timeout(Duration::from_secs(120), command.output()).await??;
        Ok(Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
        })
    }

    /// Runs `kubectl-ste args…` with extra environment variables.
    pub async fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Run> {
        let mut command = self.command(&self.bin_dir().join("kubectl-ste"));
        command.args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        Self::output(command).await
    }

    /// Runs `kubectl-ste args…`.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<Run> {
        self.run_with(args, &[]).await
    }

    /// Runs `kubectl-ste args…` on a pseudo-terminal (util-linux
    /// `script`), typing `input` into it; `None` when `script` is missing.
    /// Output is the terminal's (stdout and stderr together, CRLF).
    pub async fn run_in_terminal(&self, args: &[&str], input: &str) -> anyhow::Result<Option<Run>> {
        let Some(script) = ["/usr/bin/script", "/bin/script"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
        else {
            return Ok(None);
        };
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let mut line = quote(&self.bin_dir().join("kubectl-ste").display().to_string());
        for arg in args {
            line.push(' ');
            line.push_str(&quote(arg));
        }
        let mut command = self.command(script);
        command
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            // Typed after the prompt appears: the terminal buffers it.
            stdin.write_all(input.as_bytes()).await?;
            drop(stdin);
        }
        let output =
            tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await??;
        Ok(Some(Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
        }))
    }

    /// Runs the real `kubectl args…` with the plugin on PATH.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<Run> {
        let mut command = self.command(Path::new("kubectl"));
        command.args(args);
        Self::output(command).await
    }
}

/// How the fake API server answers a path.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status and JSON body.
    Json(u16, String),
    /// A WebSocket upgrade speaking `v4.channel.k8s.io` port-forwarding,
    /// relayed to this TCP address.
    PortForward(SocketAddr),
}

/// A fake Kubernetes API server on 127.0.0.1. Requests are matched on
/// their path (see `route_matches`; the first matching route wins);
/// unknown paths get a 404 Status. Every request line (`GET /path?query`)
/// is recorded.
pub struct FakeApiServer {
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl FakeApiServer {
    pub async fn start(routes: Vec<(String, Reply)>) -> anyhow::Result<FakeApiServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(routes);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (routes, seen) = (routes.clone(), seen.clone());
                tokio::spawn(async move {
                    let _ = serve(socket, &routes, &seen).await;
                });
            }
        });
        Ok(FakeApiServer {
            url,
            requests,
            task,
        })
    }

    /// The request lines seen so far, e.g. `GET /api/v1/nodes`.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }

    /// A kubeconfig whose current context points at this server, with
    /// `namespace` as the context's namespace and a bearer token as its
    /// user's credentials.
    pub fn kubeconfig(&self, namespace: Option<&str>) -> String {
        self.kubeconfig_as(namespace, KubeUser::Token("fake-token"))
    }

    /// [`FakeApiServer::kubeconfig`] with `user` as the context's user.
    pub fn kubeconfig_as(&self, namespace: Option<&str>, user: KubeUser) -> String {
        let namespace = namespace
            .map(|ns| format!("\n    namespace: {ns}"))
            .unwrap_or_default();
        let user = user.yaml();
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  \
             cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: fake{namespace}\nusers:\n- name: fake\n  user:{user}\n",
            self.url
        )
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: one request (answers close the connection), or an
/// upgraded port-forward.
async fn serve(
    mut socket: TcpStream,
    routes: &[(String, Reply)],
    seen: &Mutex<Vec<String>>,
) -> anyhow::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if socket.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    seen.lock()
        .expect("requests")
        .push(format!("{method} {target}"));
    let key = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, v)| v.trim().to_owned());
    let reply = routes
        .iter()
        .find(|(route, _)| route_matches(route, target))
        .map(|(_, r)| r.clone())
        .unwrap_or_else(|| Reply::Json(404, status_json(404, "NotFound", "not found")));
    match (reply, key) {
        (Reply::PortForward(to), Some(key)) => {
            port_forward(socket, &key, to, requested_port(target)).await
        }
        (Reply::PortForward(_), None) => {
            respond(
                &mut socket,
                400,
                &status_json(400, "BadRequest", "upgrade required"),
            )
            .await
        }
        (Reply::Json(status, body), _) => respond(&mut socket, status, &body).await,
    }
}

/// A route `PATH` matches that path with any query; `PATH?PART` also
/// needs PART in the query (e.g. an encoded label selector).
fn route_matches(route: &str, target: &str) -> bool {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match route.split_once('?') {
        Some((route_path, part)) => route_path == path && query.contains(part),
        None => route == path,
    }
}

/// The `ports=N` the client asked to forward (one port per request here);
/// the channel headers must name it.
fn requested_port(target: &str) -> u16 {
    target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .find_map(|p| p.strip_prefix("ports="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

async fn respond(socket: &mut TcpStream, status: u16, body: &str) -> anyhow::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Status",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await?;
    Ok(())
}

/// The port-forward protocol (v4.channel.k8s.io) over a server-side
/// WebSocket: first a frame `[channel, port_lo, port_hi]` for the data
/// (0) and error (1) channels, then `[0, bytes…]` both ways.
async fn port_forward(
    mut socket: TcpStream,
    key: &str,
    target: SocketAddr,
    port: u16,
) -> anyhow::Result<()> {
    let accept = base64(&sha1(
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    ));
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
    );
    socket.write_all(response.as_bytes()).await?;
    let upstream = TcpStream::connect(target).await?;
    let (mut ws_read, mut ws_write) = socket.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();
    let port = port.to_le_bytes();
    let to_client = tokio::spawn(async move {
        write_frame(&mut ws_write, &[0, port[0], port[1]]).await?;
        write_frame(&mut ws_write, &[1, port[0], port[1]]).await?;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = up_read.read(&mut buf).await?;
            if n == 0 {
                // Close frame.
                ws_write.write_all(&[0x88, 0]).await?;
                return Ok::<(), anyhow::Error>(());
            }
            let mut message = Vec::with_capacity(n + 1);
            message.push(0);
            message.extend_from_slice(&buf[..n]);
            write_frame(&mut ws_write, &message).await?;
        }
    });
    loop {
        let Some((opcode, payload)) = read_frame(&mut ws_read).await? else {
            break;
        };
        match opcode {
            0x2 if payload.first() == Some(&0) => up_write.write_all(&payload[1..]).await?,
            0x8 => break,
            _ => {}
        }
    }
    let _ = up_write.shutdown().await;
    to_client.abort();
    Ok(())
}

async fn write_frame(
    out: &mut tokio::net::tcp::OwnedWriteHalf,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut frame = vec![0x82u8];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    out.write_all(&frame).await
}

/// One client frame (masked): `(opcode, payload)`, `None` at EOF.
async fn read_frame(
    input: &mut tokio::net::tcp::OwnedReadHalf,
) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 2];
    if input.read_exact(&mut head).await.is_err() {
        return Ok(None);
    }
    let opcode = head[0] & 0x0f;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            input.read_exact(&mut b).await?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            input.read_exact(&mut b).await?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    if masked {
        input.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    input.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Some((opcode, payload)))
}

/// SHA-1 (for the WebSocket handshake only).
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for chunk in message.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in chunk.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `v1.Status` failure body.
pub fn status_json(code: u16, reason: &str, message: &str) -> String {
    format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":{message:?},"reason":"{reason}","code":{code}}}"#
    )
}

/// A `v1.Node` with an InternalIP (and optional labels as JSON object text).
pub fn node_json(name: &str, internal_ip: &str, labels: &str) -> String {
    format!(
        r#"{{"metadata":{{"name":"{name}","labels":{labels}}},"status":{{"addresses":[{{"type":"InternalIP","address":"{internal_ip}"}},{{"type":"Hostname","address":"{name}"}}]}}}}"#
    )
}

/// A running, ready `v1.Pod`.
pub fn pod_json(namespace: &str, name: &str, resource_version: &str, node: &str) -> String {
    format!(
        r#"{{"metadata":{{"name":"{name}","namespace":"{namespace}","resourceVersion":"{resource_version}"}},"spec":{{"nodeName":"{node}","containers":[]}},"status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"True"}}]}}}}"#
    )
}

/// A `v1.ConfigMap` with these data keys and values.
pub fn configmap_json(namespace: &str, name: &str, data: &[(&str, &str)]) -> String {
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    })
    .to_string()
}

/// A `v1.<Kind>List` of JSON items.
pub fn list_json(kind: &str, items: &[String]) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"{kind}","metadata":{{"resourceVersion":"1"}},"items":[{}]}}"#,
        items.join(",")
    )
}

/// The kubeconfig of a local cluster: current context `ste-local`, whose
/// `ste.io/router` extension names the router's user address and the STE
/// CA file, with its API server at `server` (which need not run) and
/// `user` as the context's user.
pub fn local_kubeconfig(server: &str, router_user: &str, ca: &Path, user: KubeUser) -> String {
    let user = user.yaml();
    format!(
        "apiVersion: v1
kind: Config
current-context: ste-local
clusters:
- name: ste-local
  cluster:
    server: {server}
contexts:
- name: ste-local
  context:
    cluster: ste-local
    user: ste-local
    extensions:
    - name: ste.io/router
      extension:
        address: {router_user}
        certificate-authority: {}
users:
- name: ste-local
  user:{user}
",
        ca.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_accept_key() {
        // RFC 6455, section 1.3.
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let accept = base64(&sha1(
            format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
        ));
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
