//! Test harness: a server on an in-memory ledger, a request builder driving `app(state)` with
//! `tower::ServiceExt::oneshot`, a tiny HTTP/1.1 client for real sockets, fixtures and the
//! assertions every test shares (problem bodies, exact numbers, timestamps).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request};
use base64::Engine as _;
use serde_json::Value;
use subledger_core::ApiKey;
use subledger_engine::{Config, Ledger};
use subledger_server::auth::HashCost;
use subledger_server::{app, AppState, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const PROBLEM_BASE: &str = "https://developer.vonage.com/api-errors";

pub fn server_config() -> ServerConfig {
    ServerConfig {
        hash_cost: HashCost {
            memory_kib: 64,
            passes: 1,
        },
        ..ServerConfig::new(ADMIN_TOKEN.into())
    }
}

/// An account's Basic credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub key: String,
    pub secret: String,
}

impl Creds {
    pub fn new(key: &str, secret: &str) -> Creds {
        Creds {
            key: key.into(),
            secret: secret.into(),
        }
    }

    pub fn authorization(&self) -> String {
        basic(&self.key, &self.secret)
    }

    pub fn with_secret(&self, secret: &str) -> Creds {
        Creds::new(&self.key, secret)
    }
}

pub fn basic(key: &str, secret: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
    format!("Basic {encoded}")
}

/// A response, whichever way it came.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The request path without its query (what `instance` must be).
    pub path: String,
}

impl Resp {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    }

    /// Asserts the status (and a JSON content type) and returns the body.
    #[track_caller]
    pub fn ok(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "status of {} — body: {}",
            self.path, self.text
        );
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json"),
            "content type of {}",
            self.path
        );
        self.json()
    }

    /// Asserts an `application/problem+json` body with this status, code and title, whose
    /// `instance` is the request path; returns the body.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str, title: &str) -> Value {
        assert_eq!(
            self.status, status,
            "status of {} — body: {}",
            self.path, self.text
        );
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json"),
            "content type of {} — body: {}",
            self.path,
            self.text
        );
        let body = self.json();
        assert_eq!(
            body["type"],
            Value::String(format!("{PROBLEM_BASE}#{code}")),
            "{body}"
        );
        assert_eq!(body["title"], Value::String(title.into()), "{body}");
        assert_eq!(body["instance"], Value::String(self.path.clone()), "{body}");
        assert!(body["detail"].is_string(), "{body}");
        for key in keys(&body) {
            assert!(
                ["type", "title", "detail", "instance", "invalid_parameters"]
                    .contains(&key.as_str()),
                "unexpected problem field {key}: {body}"
            );
        }
        body
    }

    /// Asserts a `422 validation` problem naming exactly these fields (in any order).
    #[track_caller]
    pub fn validation(&self, status: u16, fields: &[&str]) -> Value {
        let body = self.problem(status, "validation", "Bad Request");
        let mut named = invalid_names(&body);
        named.sort();
        // (A field may be named twice, e.g. "must be a string" and "is required": see
        // errors::each_bad_field_is_named_once.)
        named.dedup();
        let mut expected: Vec<String> = fields.iter().map(|name| (*name).to_string()).collect();
        expected.sort();
        assert_eq!(named, expected, "{body}");
        for parameter in body["invalid_parameters"].as_array().into_iter().flatten() {
            assert!(
                parameter["reason"]
                    .as_str()
                    .is_some_and(|reason| !reason.is_empty()),
                "{body}"
            );
        }
        body
    }

    /// Asserts `401 unauthorized` with a problem body and a Basic challenge.
    #[track_caller]
    pub fn unauthorized(&self) -> Value {
        let body = self.problem(401, "unauthorized", "Invalid credentials supplied");
        assert!(
            self.header("www-authenticate")
                .is_some_and(|value| value.starts_with("Basic")),
            "{:?}",
            self.headers
        );
        body
    }

    #[track_caller]
    pub fn invalid_api_key(&self) -> Value {
        self.problem(404, "invalid-api-key", "Invalid API Key")
    }
}

/// The sorted keys of a JSON object.
#[track_caller]
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[track_caller]
pub fn assert_keys(value: &Value, expected: &[&str]) {
    let mut expected: Vec<String> = expected.iter().map(|key| (*key).to_string()).collect();
    expected.sort();
    assert_eq!(keys(value), expected, "{value}");
}

pub fn invalid_names(problem: &Value) -> Vec<String> {
    problem["invalid_parameters"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The exact text of a JSON number (serde_json keeps it: `arbitrary_precision`).
#[track_caller]
pub fn num(value: &Value) -> String {
    assert!(value.is_number(), "not a number: {value}");
    value.to_string()
}

#[track_caller]
pub fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_string()
}

/// `2026-01-02T03:04:05.000Z`, and within a few minutes of now.
#[track_caller]
pub fn assert_timestamp(value: &Value) {
    let text = text(value);
    let bytes = text.as_bytes();
    assert_eq!(bytes.len(), 24, "{text}");
    for (index, byte) in bytes.iter().enumerate() {
        let expected = match index {
            4 | 7 => Some(b'-'),
            10 => Some(b'T'),
            13 | 16 => Some(b':'),
            19 => Some(b'.'),
            23 => Some(b'Z'),
            _ => None,
        };
        match expected {
            Some(expected) => assert_eq!(*byte, expected, "{text}"),
            None => assert!(byte.is_ascii_digit(), "{text}"),
        }
    }
    let at = subledger_views::time::parse_rfc3339(&text).expect("parses");
    let now = subledger_views::time::now();
    assert!(
        (now.0 - at.0).abs() < 10 * 60 * 1000,
        "{text} is not about now"
    );
}

#[track_caller]
pub fn assert_uuid(value: &Value) {
    let text = text(value);
    assert!(
        text.len() == 36 && text.parse::<subledger_core::SecretId>().is_ok(),
        "not a UUID: {text}"
    );
}

#[track_caller]
pub fn assert_api_key(value: &Value) {
    let text = text(value);
    assert!(
        text.len() == 8
            && text
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit()),
        "not an api key: {text}"
    );
}

pub fn transfer_body(from: &Creds, to: &Creds, amount: &str) -> String {
    format!(
        r#"{{"from":"{}","to":"{}","amount":{amount}}}"#,
        from.key, to.key
    )
}

/// A server on a fresh in-memory ledger.
#[derive(Debug, Clone)]
pub struct Server {
    pub state: Arc<AppState>,
    pub ledger: Arc<Ledger>,
    router: subledger_server::App,
}

impl Server {
    pub fn new() -> Server {
        Server::with_engine(Config::default())
    }

    pub fn with_engine(config: Config) -> Server {
        Server::on(Ledger::in_memory(config).expect("in-memory ledger"))
    }

    /// A server on this ledger.
    pub fn on(ledger: Ledger) -> Server {
        Server::configured(ledger, server_config())
    }

    /// A server on this ledger with these settings.
    pub fn configured(ledger: Ledger, config: ServerConfig) -> Server {
        let ledger = Arc::new(ledger);
        let state = AppState::new(Arc::clone(&ledger), config);
        let router = app(Arc::clone(&state));
        Server {
            state,
            ledger,
            router,
        }
    }

    pub fn req(&self, method: &str, path: &str) -> Req {
        Req {
            router: self.router.clone(),
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub async fn get(&self, path: &str, creds: &Creds) -> Resp {
        self.req("GET", path).basic(creds).send().await
    }

    pub async fn post(&self, path: &str, creds: &Creds, body: &str) -> Resp {
        self.req("POST", path).basic(creds).body(body).send().await
    }

    pub async fn patch(&self, path: &str, creds: &Creds, body: &str) -> Resp {
        self.req("PATCH", path).basic(creds).body(body).send().await
    }

    pub async fn delete(&self, path: &str, creds: &Creds) -> Resp {
        self.req("DELETE", path).basic(creds).send().await
    }

    pub async fn admin(&self, method: &str, path: &str, body: &str) -> Resp {
        self.req(method, path).admin().body(body).send().await
    }

    /// A new primary through the admin API.
    pub async fn open_primary(&self) -> Creds {
        let value = self
            .admin("POST", "/admin/primaries", r#"{"name":"primary"}"#)
            .await
            .ok(200);
        Creds::new(&text(&value["api_key"]), &text(&value["secret"]))
    }

    /// A new primary with this balance.
    pub async fn funded_primary(&self, amount: &str) -> Creds {
        let primary = self.open_primary().await;
        self.top_up(&primary.key, amount).await;
        primary
    }

    pub async fn top_up(&self, key: &str, amount: &str) -> Value {
        self.admin(
            "POST",
            &format!("/admin/accounts/{key}/top-ups"),
            &format!(r#"{{"amount":{amount}}}"#),
        )
        .await
        .ok(200)
    }

    pub async fn set_credit_limit(&self, key: &str, limit: &str) -> Value {
        self.admin(
            "PUT",
            &format!("/admin/accounts/{key}/credit-limit"),
            &format!(r#"{{"credit_limit":{limit}}}"#),
        )
        .await
        .ok(200)
    }

    pub async fn create_sub(&self, primary: &Creds, body: &str) -> (Value, Creds) {
        let value = self
            .post(
                &format!("/accounts/{}/subaccounts", primary.key),
                primary,
                body,
            )
            .await
            .ok(200);
        let creds = Creds::new(&text(&value["api_key"]), &text(&value["secret"]));
        (value, creds)
    }

    /// A subaccount with its own balance.
    pub async fn own_sub(&self, primary: &Creds) -> Creds {
        self.create_sub(
            primary,
            r#"{"name":"own","use_primary_account_balance":false}"#,
        )
        .await
        .1
    }

    /// A subaccount on its primary's balance.
    pub async fn shared_sub(&self, primary: &Creds) -> Creds {
        self.create_sub(primary, r#"{"name":"shared"}"#).await.1
    }

    pub async fn balance_transfer(
        &self,
        primary: &Creds,
        from: &Creds,
        to: &Creds,
        amount: &str,
    ) -> Resp {
        self.post(
            &format!("/accounts/{}/balance-transfers", primary.key),
            primary,
            &transfer_body(from, to, amount),
        )
        .await
    }

    pub async fn credit_transfer(
        &self,
        primary: &Creds,
        from: &Creds,
        to: &Creds,
        amount: &str,
    ) -> Resp {
        self.post(
            &format!("/accounts/{}/credit-transfers", primary.key),
            primary,
            &transfer_body(from, to, amount),
        )
        .await
    }

    /// The account's balance in the ledger's read views (`None` while shared).
    pub fn balance(&self, key: &str) -> Option<String> {
        let key: ApiKey = key.parse().expect("api key");
        self.ledger
            .read(|views| views.account(&key))
            .expect("known account")
            .balance
            .map(|amount| amount.to_string())
    }

    pub fn credit_limit(&self, key: &str) -> Option<String> {
        let key: ApiKey = key.parse().expect("api key");
        self.ledger
            .read(|views| views.account(&key))
            .expect("known account")
            .credit_limit
            .map(|amount| amount.to_string())
    }
}

/// A request through `app(state)` with `oneshot`.
#[derive(Debug)]
pub struct Req {
    router: subledger_server::App,
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Req {
    pub fn basic(self, creds: &Creds) -> Req {
        let value = creds.authorization();
        self.header("authorization", &value)
    }

    pub fn admin(self) -> Req {
        self.header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.as_bytes().to_vec()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Req {
        self.body = body.into();
        self
    }

    pub async fn send(self) -> Resp {
        let path = self
            .path
            .split_once('?')
            .map_or(self.path.as_str(), |(path, _)| path)
            .to_string();
        let mut builder = Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str());
        for (name, value) in &self.headers {
            builder = builder.header(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_bytes(value).expect("header value"),
            );
        }
        if !self.body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder.body(Body::from(self.body)).expect("request");
        let response = self.router.oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("response body");
        Resp {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).expect("UTF-8 response"),
            path,
        }
    }
}

// --- a real socket ------------------------------------------------------------------------

/// A server running `serve` on 127.0.0.1, until `stop` is called.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub async fn start(server: &Server) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(subledger_server::serve(
            listener,
            Arc::clone(&server.state),
            async move {
                let _ = stopped.await;
            },
        ));
        Running {
            addr,
            stop: Some(stop),
            handle,
        }
    }

    /// Resolves the shutdown future.
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn stop(mut self) {
        self.trigger_shutdown();
        tokio::time::timeout(std::time::Duration::from_secs(10), self.handle)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
            .expect("serve");
    }
}

/// The text of a request with `Connection: close`.
pub fn request_text(
    method: &str,
    path: &str,
    authorization: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> String {
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(value) = authorization {
        text.push_str(&format!("Authorization: {value}\r\n"));
    }
    if !body.is_empty() {
        text.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text
}

/// One request on a new connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> std::io::Result<Resp> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(request_text(method, path, authorization, &[], body).as_bytes())
        .await?;
    read_response(&mut stream, path).await
}

/// Reads a whole response (the server closes after it: `Connection: close`).
pub async fn read_response(
    stream: &mut tokio::net::TcpStream,
    path: &str,
) -> std::io::Result<Resp> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_response(&raw, path)
}

fn invalid(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

pub fn parse_response(raw: &[u8], path: &str) -> std::io::Result<Resp> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("no header end in {} bytes", raw.len())))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| invalid("head is not UTF-8"))?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if version != "HTTP/1.1" {
        return Err(invalid(format!("status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("status line {status_line:?}")))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("header {line:?}")))?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| invalid("header name"))?,
            HeaderValue::from_str(value.trim()).map_err(|_| invalid("header value"))?,
        );
    }
    let chunked = headers
        .get("transfer-encoding")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    } else if let Some(length) = headers
        .get("content-length")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok())
    {
        if body.len() < length {
            return Err(invalid(format!(
                "body cut at {} of {length} bytes",
                body.len()
            )));
        }
        body.truncate(length);
    }
    Ok(Resp {
        status,
        headers,
        text: String::from_utf8(body).map_err(|_| invalid("body is not UTF-8"))?,
        path: path
            .split_once('?')
            .map_or(path, |(path, _)| path)
            .to_string(),
    })
}

fn dechunk(mut raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or_else(|| invalid("chunk size line"))?;
        let size_text = std::str::from_utf8(&raw[..line_end]).map_err(|_| invalid("chunk"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid("chunk size"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err(invalid("chunk cut"));
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
