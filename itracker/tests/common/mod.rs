//! Helpers shared by the server tests: a real server on port 0 with a private copy of a
//! topology file, a blocking HTTP agent, and the RFC 7285 JSON Schemas.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use p4p_itracker::config::Config;
use p4p_itracker::server::{self, Background};
use serde_json::Value;

pub const ADMIN_TOKEN: &str = "s3cret-admin-token";
pub const TOPOLOGY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../topology-data");
pub const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");

/// A private scratch directory (unique per test and process).
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "p4p-itracker-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

pub struct TestServer {
    pub server: Background,
    pub base: String,
    pub topology: PathBuf,
}

/// Starts a server on 127.0.0.1:0 with a copy of `topology-data/<file>`.
pub fn start(file: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = scratch(file);
    let topology = dir.join(file);
    std::fs::copy(format!("{TOPOLOGY_DIR}/{file}"), &topology).expect("copy topology");
    let mut config = Config {
        bind: "127.0.0.1:0".parse().expect("addr"),
        topology: Some(topology.clone()),
        admin_token: Some(ADMIN_TOKEN.to_string()),
        workers: 1,
        ..Config::default()
    };
    tweak(&mut config);
    let server = server::spawn(config).expect("server starts");
    let base = format!("http://{}", server.addr());
    TestServer {
        server,
        base,
        topology,
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub etag: Option<String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("JSON body ({e}): {}", self.body))
    }
}

fn reply(mut res: ureq::http::Response<ureq::Body>) -> Reply {
    let header = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let etag = header("etag");
    let status = res.status().as_u16();
    let body = res.body_mut().read_to_string().unwrap_or_default();
    Reply {
        status,
        content_type,
        etag,
        body,
    }
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    reply(req.call().expect("GET"))
}

pub fn post(url: &str, content_type: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().post(url).header("Content-Type", content_type);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    reply(req.send(body).expect("POST"))
}

pub fn put(url: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().put(url).header("Content-Type", "application/toml");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    reply(req.send(body).expect("PUT"))
}

pub fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// The RFC 7285 JSON Schemas, loaded offline.
pub struct Schemas {
    registry: jsonschema::Registry<'static>,
}

const SCHEMA_BASE: &str = "https://openalto.github.io/alto-jsonschema/";

impl Schemas {
    pub fn load() -> Schemas {
        let dir = format!("{SHARED}/alto-jsonschema");
        let mut builder = jsonschema::Registry::new();
        for entry in std::fs::read_dir(&dir).expect("schema dir") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if !name.ends_with(".json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("schema");
            let json: Value = serde_json::from_str(&text).expect("schema JSON");
            builder = builder
                .add(
                    format!("{SCHEMA_BASE}{name}"),
                    jsonschema::Resource::from_contents(json),
                )
                .expect("add schema");
        }
        Schemas {
            registry: builder.prepare().expect("registry"),
        }
    }

    /// Asserts that `instance` is a valid `message.<kind>.rfc7285.json`.
    pub fn check(&self, kind: &str, instance: &Value) {
        self.check_file(&format!("message.{kind}.rfc7285.json"), instance);
    }

    /// Asserts that `instance` is valid against the schema file `name` (e.g. our
    /// `message.UpdateStreamControl.rfc8895.json`).
    pub fn check_file(&self, name: &str, instance: &Value) {
        let kind = name;
        let schema = serde_json::json!({"$ref": format!("{SCHEMA_BASE}{name}")});
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .with_registry(&self.registry)
            .build(&schema)
            .expect("validator");
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{kind} invalid: {errors:#?}\n{instance:#}"
        );
    }
}
