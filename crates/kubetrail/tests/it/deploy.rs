//! The Kubernetes manifests in `deploy/` and the examples in `docs/examples/` are checked for
//! what would break them in a cluster: every document well-formed, selectors matching their
//! pods, probes and ports that exist, embedded kubetrail configuration that kubetrail accepts,
//! and command-line flags that `kubetrail serve` knows.

use std::path::PathBuf;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::{run, stdout};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    let mut v = value;
    for key in path {
        v = &v[*key];
    }
    v.as_str()
        .unwrap_or_else(|| panic!("missing {}", path.join(".")))
}

fn check_workload(doc: &Value, serve_help: &str) -> Vec<String> {
    let spec = &doc["spec"];
    assert_eq!(
        spec["selector"]["matchLabels"],
        spec["template"]["metadata"]["labels"],
        "{}: the selector does not select the pods",
        text(doc, &["metadata", "name"])
    );
    let pod = &spec["template"]["spec"];
    let volumes: Vec<&str> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let mut mounts = Vec::new();
    for container in pod["containers"].as_sequence().unwrap() {
        let args: Vec<&str> = container["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], "serve");
        for arg in &args[1..] {
            let flag = arg.split('=').next().unwrap();
            assert!(serve_help.contains(flag), "kubetrail serve has no {flag}");
        }
        let ports: Vec<&str> = container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for probe in ["readinessProbe", "livenessProbe"] {
            let path = text(container, &[probe, "httpGet", "path"]);
            assert!(["/readyz", "/healthz"].contains(&path), "{probe} {path}");
            let port = text(container, &[probe, "httpGet", "port"]);
            assert!(ports.contains(&port), "{probe} port {port}");
        }
        for mount in container["volumeMounts"].as_sequence().unwrap() {
            let name = text(mount, &["name"]);
            assert!(volumes.contains(&name), "volume {name} is not defined");
            mounts.push(text(mount, &["mountPath"]).to_owned());
        }
        for arg in &args {
            for flag in ["--data=", "--tail=", "--config="] {
                if let Some(path) = arg.strip_prefix(flag) {
                    assert!(
                        mounts.iter().any(|m| path.starts_with(m.as_str())),
                        "{arg} is not on a mounted volume"
                    );
                }
            }
        }
    }
    mounts
}

#[test]
fn manifests_are_consistent_and_kubetrail_accepts_their_configuration() {
    let help = run(&["serve", "--help"], b"");
    let serve_help = stdout(&help);
    let daemonset = documents("deploy/kubernetes/daemonset-tail.yaml");
    let kinds: Vec<&str> = daemonset.iter().map(|d| text(d, &["kind"])).collect();
    assert_eq!(kinds, ["Namespace", "DaemonSet"]);
    let mounts = check_workload(&daemonset[1], &serve_help);
    assert!(mounts.contains(&"/var/log/kubernetes/audit".to_owned()));
    let host_paths: Vec<&str> = daemonset[1]["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(
        host_paths,
        ["/var/log/kubernetes/audit", "/var/lib/kubetrail"]
    );

    let webhook = documents("deploy/kubernetes/webhook.yaml");
    let kinds: Vec<&str> = webhook.iter().map(|d| text(d, &["kind"])).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "Secret",
            "ConfigMap",
            "PersistentVolumeClaim",
            "Deployment",
            "Service"
        ]
    );
    for doc in &webhook {
        assert!(doc["apiVersion"].as_str().is_some());
        assert!(doc["metadata"]["name"].as_str().is_some());
    }
    check_workload(&webhook[4], &serve_help);
    let config = text(&webhook[2], &["data", "kubetrail.yaml"]);
    let parsed = kubetrail_server::ServeConfig::parse(config).unwrap();
    assert_eq!(parsed.webhook.clusters[0].name, "prod");
    let token_file = parsed.webhook.clusters[0].token_file.clone().unwrap();
    assert!(token_file.starts_with("/etc/kubetrail/tokens"));
    assert!(webhook[1]["stringData"]["prod"].as_str().is_some());
    assert_eq!(
        webhook[5]["spec"]["selector"],
        webhook[4]["spec"]["template"]["metadata"]["labels"]
    );
}

#[test]
fn documentation_examples_load() {
    for kubeconfig in [
        "docs/examples/webhook-kubeconfig-http.yaml",
        "docs/examples/webhook-kubeconfig-https.yaml",
    ] {
        let doc = &documents(kubeconfig)[0];
        assert_eq!(text(doc, &["kind"]), "Config");
        let server = text(&doc["clusters"][0], &["cluster", "server"]);
        assert!(server.contains("/audit"), "{server}");
    }
    let check = run(
        &[
            "policy",
            "check",
            repo("docs/examples/audit-policy.yaml").to_str().unwrap(),
        ],
        b"",
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
