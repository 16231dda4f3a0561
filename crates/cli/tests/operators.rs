//! The operators' API over the network (issue 17): `standby serve --listen
//! ADDR` serves the API over TLS under the deployment's own CA, to tokens
//! an admin makes and revokes (`standby token`); a read-only token looks
//! but never acts; every request that acts is in the audit log with the
//! token's name (`standby audit`); and the API answers as its own OpenAPI
//! document says, fuzzed by schemathesis (a real, independent client).
//! Requests go through curl, as an operator's script would send them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::daemon::Daemon;
use support::{path, run, standby_command};

/// A deployment with machine `web` (not protected, not running) and its daemon serving
/// operators at a free loopback port.
struct Served {
    _root: tempfile::TempDir,
    home: PathBuf,
    url: String,
    _daemon: Daemon,
}

impl Served {
    fn start() -> Served {
        Served::start_with(true)
    }

    /// With machine `web` or without any.
    fn start_with(web: bool) -> Served {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("d");
        run(&["init", path(&home)]).ok();
        if web {
            let disk = root.path().join("disk.raw");
            std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
            run(&["machine", "add", "web", "--disk", path(&disk), "--home", path(&home)]).ok();
        }
        let listen = format!("127.0.0.1:{}", standby_testkit::free_port());
        let daemon = Daemon::start_serving(&home, standby_command(), &["--listen", &listen]);
        Served { _root: root, home, url: format!("https://{listen}"), _daemon: daemon }
    }

    fn ca(&self) -> PathBuf {
        self.home.join("tls/ca.pem")
    }

    /// Makes token `name` (with `more` flags) through the CLI; its secret.
    fn token(&self, name: &str, more: &[&str]) -> (PathBuf, String) {
        let file = self.home.parent().unwrap().join(format!("{name}.token"));
        let mut arguments = vec!["token", "create", name, "--file", path(&file), "--home", path(&self.home)];
        arguments.extend(more);
        run(&arguments).ok();
        let text: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        (file, text["token"].as_str().unwrap().to_string())
    }

    /// `method path` with `headers` and `body`: the status and the JSON answer.
    fn ask(&self, method: &str, route: &str, headers: &[String], body: Option<&str>) -> (u16, Value) {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--cacert", path(&self.ca()), "-X", method, "-w", "\n%{http_code}"]);
        for header in headers {
            curl.args(["-H", header]);
        }
        if let Some(body) = body {
            curl.args(["-H", "content-type: application/json", "--data-binary", body]);
        }
        let output = curl.arg(format!("{}{route}", self.url)).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (answer, status) = text.rsplit_once('\n').unwrap_or_else(|| panic!("curl: {text} {output:?}"));
        let json = serde_json::from_str(answer).unwrap_or_else(|_| panic!("{method} {route}: not JSON: {answer:?}"));
        (status.parse().unwrap(), json)
    }
}

fn bearer(secret: &str) -> Vec<String> {
    vec![format!("Authorization: Bearer {secret}")]
}

fn refused_with(answer: (u16, Value), status: u16, code: &str) -> String {
    assert_eq!((answer.0, answer.1["code"].as_str()), (status, Some(code)), "{answer:?}");
    answer.1["message"].as_str().unwrap().to_string()
}

#[test]
fn tokens_open_the_api_read_only_ones_only_to_look_and_the_audit_log_names_who_acted() {
    let served = Served::start();
    let (admin_file, admin) = served.token("ops", &[]);
    let (_, reader) = served.token("noc", &["--read-only"]);
    only_its_user_reads(&admin_file);

    // Without a valid token in the Authorization header: 401, whatever was asked.
    let protect = "/v1/machines/web/protect";
    for headers in [
        vec![],
        vec![format!("X-Token: {admin}")],
        vec![format!("Authorization: Token {admin}")],
        vec![format!("Authorization: Basic {admin}")],
        vec![format!("Cookie: token={admin}")],
        bearer("standby_0000000000000000000000000000000000000000000000000000000000000000"),
        bearer("not-a-token"),
    ] {
        let message = refused_with(served.ask("POST", protect, &headers, Some("{}")), 401, "unauthenticated");
        assert!(!message.contains(&admin), "the secret came back: {message}");
        refused_with(served.ask("GET", "/v1/status", &headers, None), 401, "unauthenticated");
    }

    // A read-only token looks, and is refused every action and the tokens.
    let (status, listed) = served.ask("GET", "/v1/status", &bearer(&reader), None);
    assert_eq!((status, listed["machines"][0]["name"].as_str()), (200, Some("web")), "{listed}");
    assert_eq!(served.ask("GET", "/api/openapi.json", &bearer(&reader), None).0, 200);
    let message = refused_with(served.ask("POST", protect, &bearer(&reader), Some("{}")), 403, "forbidden");
    assert!(message.contains("'noc' is read-only"), "{message}");
    refused_with(served.ask("POST", "/v1/tokens", &bearer(&reader), Some(r#"{"name":"mine"}"#)), 403, "forbidden");
    refused_with(served.ask("GET", "/v1/tokens", &bearer(&reader), None), 403, "forbidden");
    refused_with(served.ask("DELETE", "/v1/tokens/ops", &bearer(&reader), None), 403, "forbidden");
    // A route that exists but not with the method: 405 in the same body.
    refused_with(served.ask("PUT", "/v1/status", &bearer(&admin), Some("{}")), 405, "method_not_allowed");

    // Nothing changed: web is unprotected, no job ran, both tokens stand.
    let home = path(&served.home);
    let status = run(&["status", "web", "--home", home, "--json"]).ok().json();
    assert_eq!(status["machines"][0]["state"], "unprotected", "{status}");
    assert_eq!(run(&["jobs", "--home", home, "--json"]).ok().json()["jobs"], serde_json::json!([]));
    let tokens = run(&["token", "list", "--home", home, "--json"]).ok().json();
    let roles: Vec<(&str, &str)> = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|token| (token["name"].as_str().unwrap(), token["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [("noc", "read-only"), ("ops", "admin")]);
    assert!(!tokens.to_string().contains(&admin[10..]), "a secret is listed: {tokens}");

    // The admin acts over the network, through the CLI and its token file.
    let (control, file) = (served.url.as_str(), path(&admin_file));
    run(&["policy", "add", "gold", "--rpo-threshold", "5m", "--control", control, "--token-file", file]).ok();
    run(&["token", "revoke", "noc", "--control", control, "--token-file", file]).ok();
    let message = refused_with(served.ask("GET", "/v1/status", &bearer(&reader), None), 401, "unauthenticated");
    assert!(message.contains("revoked"), "{message}");
    run(&["status", "--control", control, "--token-file", file]).ok();

    // The audit log: who asked what, and the answer; GETs are not in it.
    let audit = run(&["audit", "--home", home, "--json"]).ok().json();
    let entries: Vec<(String, String, String, Value, Value)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let field = |name: &str| entry[name].as_str().unwrap().to_string();
            (field("actor"), field("method"), field("path"), entry["status"].clone(), entry["code"].clone())
        })
        .collect();
    let expected = [
        ("local", "POST", "/v1/tokens", 200, Value::Null),
        ("local", "POST", "/v1/tokens", 200, Value::Null),
        ("noc", "POST", protect, 403, "forbidden".into()),
        ("noc", "POST", "/v1/tokens", 403, "forbidden".into()),
        ("noc", "DELETE", "/v1/tokens/ops", 403, "forbidden".into()),
        ("ops", "PUT", "/v1/status", 405, "method_not_allowed".into()),
        ("ops", "POST", "/v1/policies", 200, Value::Null),
        ("ops", "DELETE", "/v1/tokens/noc", 200, Value::Null),
    ];
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(actor, method, route, status, code)| {
            (actor.to_string(), method.to_string(), route.to_string(), Value::from(status), code)
        })
        .collect();
    assert_eq!(entries, expected, "{audit}");
    assert_eq!(audit["entries"][6]["request"]["name"], "gold", "{audit}");
    let human = run(&["audit", "--home", home]).ok().stdout;
    assert!(human.contains("ops") && human.contains("DELETE /v1/tokens/noc") && human.contains("403 forbidden"));

    // No secret is kept: the state holds hashes only.
    let state = std::fs::read(served.home.join("state.db")).unwrap();
    assert!(!state.windows(admin.len()).any(|window| window == admin.as_bytes()), "the secret is in state.db");
}

#[test]
fn token_and_listener_mistakes_are_refused_with_nothing_left() {
    let served = Served::start();
    let home = path(&served.home);
    let folder = served.home.parent().unwrap();
    served.token("ops", &[]);
    let taken = folder.join("taken.token");
    run(&["token", "create", "ops", "--file", path(&taken), "--home", home]).bad_input("already exists");
    assert!(!taken.exists(), "a refused token left its file");
    run(&["token", "create", "bad name", "--file", path(&taken), "--home", home]).bad_input("not allowed");
    std::fs::write(&taken, "mine").unwrap();
    run(&["token", "create", "other", "--file", path(&taken), "--home", home]).bad_input("exists");
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "mine");
    run(&["token", "revoke", "nobody", "--home", home]).bad_input("no token named 'nobody'");
    let names = run(&["token", "list", "--home", home, "--json"]).ok().json();
    assert_eq!(names["tokens"].as_array().unwrap().len(), 1, "{names}");
    run(&["audit", "--limit", "0", "--home", home]).bad_input("1 to 10000");

    // Plain HTTP at the TLS port: told so, in one line of JSON.
    let plain = Command::new("curl").args(["-sS", &served.url.replace("https", "http")]).output().unwrap();
    assert!(String::from_utf8_lossy(&plain.stdout).contains("tls_required"), "{plain:?}");

    // serve --listen: an address that is none, or taken (by this daemon).
    let other = folder.join("other");
    run(&["init", path(&other)]).ok();
    run(&["serve", "--home", path(&other), "--listen", "localhost"]).bad_input("is not an IP address and port");
    let taken = served.url.trim_start_matches("https://");
    run(&["serve", "--home", path(&other), "--listen", taken]).bad_input("cannot listen there");
    assert!(!other.join("run/standby.sock").exists());
}

#[test]
fn the_api_answers_as_its_openapi_document_says() {
    // No machine: the stateful phase would boot it and wait a minute for a
    // guest without an OS to power down on each stop.
    let served = Served::start_with(false);
    let (_, admin) = served.token("fuzzer", &[]);
    let (status, document) = served.ask("GET", "/api/openapi.json", &bearer(&admin), None);
    assert_eq!((status, document["openapi"].as_str()), (200, Some("3.1.0")));
    let paths: Vec<&str> = document["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for route in ["/v1/machines/{name}/failover", "/v1/status", "/v1/jobs/{id}", "/v1/tokens/{name}", "/v1/audit"] {
        assert!(paths.contains(&route), "{route} is not in {paths:?}");
    }
    // Every operation: no 5xx, every answer as the document says (status,
    // content type, schema), schema-violating requests refused. Revoking
    // tokens is fuzzed apart, without the stateful phase, which would
    // otherwise revoke the fuzzer's own token (listed by GET /v1/tokens).
    // A schema-valid request may still be refused (a disk path that does
    // not exist on the host): positive_data_acceptance is not checked.
    let everything_else = ["--exclude-path", "/v1/tokens/{name}"];
    let revocation = ["--include-path", "/v1/tokens/{name}", "--phases", "examples,coverage,fuzzing"];
    for only in [&everything_else[..], &revocation[..]] {
        let mut schemathesis = schemathesis(&served, &admin);
        let output = schemathesis.args(only).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "schemathesis {only:?} found failures:\n{text}\n{}", stderr(&output));
    }
    // The fuzzer's requests are in the audit log under its token's name.
    let audit = run(&["audit", "--limit", "10000", "--home", path(&served.home), "--json"]).ok().json();
    assert!(audit["entries"].as_array().unwrap().iter().any(|entry| entry["actor"] == "fuzzer"));
}

/// schemathesis (tools/python-tests.txt, installed by scripts/test) at the
/// served API with `token`.
fn schemathesis(served: &Served, token: &str) -> Command {
    let python = standby_testkit::workspace_root().join("target/python");
    assert!(python.join("schemathesis").is_dir(), "schemathesis is not installed: run scripts/test");
    let mut command = Command::new("python3");
    command
        .env("PYTHONPATH", &python)
        .env("SCHEMATHESIS_HOOKS", "")
        .arg(python.join("bin/st"))
        .args(["run", &format!("{}/api/openapi.json", served.url)])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--tls-verify", path(&served.ca())])
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "25", "--seed", "17", "--no-color"]);
    command.current_dir(served.home.parent().unwrap());
    command
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn only_its_user_reads(file: &Path) {
    let mode = std::os::unix::fs::PermissionsExt::mode(&file.metadata().unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "{} is {mode:o}", file.display());
}

/// One sample of a scrape, as Prometheus' own parser read it.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// `text` through prometheus_client's OpenMetrics parser (PyPI).
fn parse_metrics(text: &str) -> Vec<Sample> {
    use std::io::Write;
    let python = standby_testkit::workspace_root().join("target/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/metrics.py");
    let mut child = Command::new("python3")
        .env("PYTHONPATH", &python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the parser refused the metrics: {}\n{text}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The value of `name` whose labels include `labels`.
fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|sample| {
            sample.name == name
                && labels.iter().all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
        })
        .map(|sample| sample.value)
}

/// `/metrics` while a guest replicates into a vault (Azurite) that then
/// stops: read by Prometheus' own parser, the disk's RPO rises during the
/// outage, the vault's errors are counted, and the RPO falls once the vault
/// is back. Meanwhile the alerts: the RPO over the policy's threshold and
/// the vault error are raised, sent to the webhook (tried again after its
/// 503) and cleared once replication caught up. The same text is on the operators' listener for tokens only,
/// and on `--metrics-listen` for anyone.
#[test]
fn metrics_and_alerts_follow_replication_through_a_vault_outage() {
    let mut azurite = standby_testkit::Azurite::start();
    azurite.create_container("standby");
    let environment = azurite.environment();
    let run = |arguments: &[&str]| support::run_with(arguments, &environment);
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("d");
    let h = path(&home);
    run(&["init", h]).ok();
    support::edit_config(&home, |config| config.replace("\"sites/recovery/vault\"", "\"az://standby/vault\""));
    run(&["vault", "init", "az://standby/vault", "--key-file", path(&home.join("keys/recovery.key"))]).ok();
    support::daemon::add_guest_machine(&home, "web", &support::daemon::test_workload());
    let webhook = Webhook::start();
    let url = webhook.url.clone();
    support::edit_config(&home, |config| format!("{config}\n[alerts]\nwebhook = \"{url}\"\n"));
    run(&["policy", "add", "tight", "--rpo-threshold", "8s", "--home", h]).ok();
    let (api, metrics) = (standby_testkit::free_port(), standby_testkit::free_port());
    let (api, metrics) = (format!("127.0.0.1:{api}"), format!("127.0.0.1:{metrics}"));
    let mut command = standby_command();
    command.envs(environment.iter().map(|(key, value)| (key, value)));
    let _daemon = Daemon::start_serving(&home, command, &["--listen", &api, "--metrics-listen", &metrics]);
    run(&["machine", "start", "web", "--home", h]).ok();
    support::daemon::wait_for(&support::daemon::console_of(&home, "web"), "standby-guest: record 3\n");
    run(&["protect", "web", "--policy", "tight", "--home", h]).ok();

    let ca = home.join("tls/ca.pem");
    let scrape = || {
        let output = Command::new("curl")
            .args(["-sS", "--fail", "--cacert", path(&ca), &format!("https://{metrics}/metrics")])
            .output()
            .unwrap();
        assert!(output.status.success(), "scrape: {}", stderr(&output));
        let text = String::from_utf8(output.stdout).unwrap();
        (parse_metrics(&text), text)
    };
    let disk = [("machine", "web"), ("disk", "web.disk0")];
    let rpo = |samples: &[Sample]| value_of(samples, "standby_rpo_seconds", &disk).expect("the disk's RPO");
    let wait_for = |what: &str, done: &dyn Fn(&[Sample]) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let (samples, text) = scrape();
            if done(&samples) {
                return samples;
            }
            assert!(std::time::Instant::now() < deadline, "{what} never came:\n{text}");
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    };

    // Replicating: a small RPO, bytes stored, writes timed, the job counted.
    // (The first status after protect may predate the guest's first write
    // through the splitter: the timed writes are waited for too.)
    let written = |samples: &[Sample]| {
        value_of(samples, "standby_splitter_write_latency_seconds_count", &disk).is_some_and(|count| count > 0.0)
    };
    let steady = wait_for("a steady RPO and timed writes", &|samples| rpo(samples) < 5.0 && written(samples));
    assert_eq!(value_of(&steady, "standby_machine_state", &[("machine", "web"), ("state", "protected")]), Some(1.0));
    assert_eq!(value_of(&steady, "standby_machine_health", &[("machine", "web"), ("health", "healthy")]), Some(1.0));
    assert!(value_of(&steady, "standby_replicated_bytes_total", &disk).unwrap() > 0.0);
    assert_eq!(value_of(&steady, "standby_site_reachable", &[("site", "recovery")]), Some(1.0));
    assert_eq!(value_of(&steady, "standby_jobs_total", &[("kind", "protect"), ("result", "succeeded")]), Some(1.0));
    assert_eq!(value_of(&steady, "standby_vault_errors_total", &disk), Some(0.0));

    // The vault stops: the RPO rises past 10 s, errors are counted.
    azurite.stop();
    let outage = wait_for("a rising RPO", &|samples| {
        rpo(samples) > 10.0 && value_of(samples, "standby_vault_errors_total", &disk).unwrap_or(0.0) > 0.0
    });
    assert_eq!(value_of(&outage, "standby_machine_health", &[("machine", "web"), ("health", "healthy")]), None);
    // The outage outlasted the policy's 8 s: the RPO alert stands, and the
    // webhook has it (its first answer was a 503: the daemon tried again).
    let standing = wait_alerts(&run, h, |kinds| kinds.contains(&("rpo_over_threshold".into(), "web".into())));
    assert!(standing.contains(&("vault_error".into(), "web/web.disk0".into())), "{standing:?}");
    webhook.wait_for("raised", "rpo_over_threshold");
    // Back: the RPO falls again, the alerts clear, the webhook is told.
    azurite.restart();
    let back = wait_for("a falling RPO", &|samples| rpo(samples) < 5.0);
    assert!(rpo(&back) < rpo(&outage), "{} then {}", rpo(&outage), rpo(&back));
    wait_alerts(&run, h, |kinds| kinds.is_empty());
    webhook.wait_for("cleared", "rpo_over_threshold");
    webhook.wait_for("cleared", "vault_error");
    let all = run(&["alerts", "--all", "--home", h, "--json"]).ok().json();
    assert!(all["alerts"].as_array().unwrap().iter().all(|alert| alert["cleared"].is_string()), "{all}");
    assert!(webhook.refused() >= 1, "the webhook's 503 was not met with a retry");

    // On the operators' listener: the same families, for a token only.
    let (status, body) = {
        let output = Command::new("curl")
            .args(["-sS", "--cacert", path(&ca), "-w", "\n%{http_code}", &format!("https://{api}/metrics")])
            .output()
            .unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap().to_owned();
        (status.to_string(), body.to_string())
    };
    assert_eq!(status, "401", "{body}");
    let token = home.parent().unwrap().join("scraper.token");
    run(&["token", "create", "scraper", "--read-only", "--file", path(&token), "--home", h]).ok();
    let secret: Value = serde_json::from_str(&std::fs::read_to_string(&token).unwrap()).unwrap();
    let output = Command::new("curl")
        .args(["-sS", "--fail", "--cacert", path(&ca), &format!("https://{api}/metrics")])
        .args(["-H", &format!("Authorization: Bearer {}", secret["token"].as_str().unwrap())])
        .output()
        .unwrap();
    let samples = parse_metrics(&String::from_utf8(output.stdout).unwrap());
    assert!(value_of(&samples, "standby_rpo_seconds", &disk).is_some());
    // Nothing else on the metrics listener.
    let other = Command::new("curl")
        .args(["-sS", "--cacert", path(&ca), "-w", "\n%{http_code}", &format!("https://{metrics}/v1/status")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&other.stdout).ends_with("\n404"), "{other:?}");
}

/// The kinds and subjects of the standing alerts, once `done` holds of them.
fn wait_alerts(
    run: &dyn Fn(&[&str]) -> support::Run,
    home: &str,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let listed = run(&["alerts", "--home", home, "--json"]).ok().json();
        let kinds: Vec<(String, String)> = listed["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| (alert["kind"].as_str().unwrap().into(), alert["subject"].as_str().unwrap().into()))
            .collect();
        if done(&kinds) {
            return kinds;
        }
        assert!(std::time::Instant::now() < deadline, "the alerts never came to what was awaited: {listed}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// A webhook receiver: a small HTTP server on a thread that keeps every
/// body POSTed to it, answering the first request 503 and the others 200.
struct Webhook {
    url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    refusals: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Webhook {
    fn start() -> Webhook {
        use std::io::{BufRead, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let refusals = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (kept, refused) = (received.clone(), refusals.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = std::io::BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let first =
                    refused.fetch_add(0, std::sync::atomic::Ordering::Relaxed) == 0 && kept.lock().unwrap().is_empty();
                let status = if first {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    "503 Service Unavailable"
                } else {
                    kept.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    "200 OK"
                };
                let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = reader.get_mut().write_all(answer.as_bytes());
            }
        });
        Webhook { url, received, refusals }
    }

    fn refused(&self) -> usize {
        self.refusals.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until an event `event` of an alert of `kind` was received.
    fn wait_for(&self, event: &str, kind: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let received = self.received.lock().unwrap().clone();
            if received.iter().any(|body| body["event"] == event && body["alert"]["kind"] == kind) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the webhook never got {event} {kind}: {received:?}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}
